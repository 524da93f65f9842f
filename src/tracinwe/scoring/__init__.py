"""Pure math on TokenGradients: influence matrices and word contributions.

Sign convention (the one place it is defined): a score is
``sum_c eta_c * grad loss(train) . grad loss(test)``. A **positive** score marks
a **proponent** (a gradient step on the training example lowers the test
loss); a **negative** score marks an **opponent**.
"""

from tracinwe.scoring.influence import (
    SIGN_CONVENTION,
    TokenMajor,
    influence_matrix,
    tracin_matrix,
)
from tracinwe.scoring.words import WordContribution, word_contributions

__all__ = [
    "SIGN_CONVENTION",
    "TokenMajor",
    "influence_matrix",
    "tracin_matrix",
    "WordContribution",
    "word_contributions",
]
