"""Moved to `tracinwe.training.small`. This alias lets benchmark processes started before the move
(and their pickled tasks) keep finding it; new code imports `tracinwe.training.small`."""

import sys

from tracinwe.training import small

sys.modules[__name__] = small
