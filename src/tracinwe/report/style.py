"""The stylesheet shared by the HTML report and the browser explorer (inlined, no network)."""

CSS = """
:root { --pos: #2166ac; --neg: #b2182b; --ink: #1d1d1f; --muted: #666; --line: #ddd; --card: #fafafa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       max-width: 1180px; margin: 0 auto; padding: 20px 24px 60px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 2px solid var(--line); }
h3 { font-size: 14px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 10px 0 6px; }
.sub { color: var(--muted); margin: 0 0 14px; }
.legend { display: flex; align-items: center; gap: 8px; font-size: 13px; color: var(--muted); flex-wrap: wrap; }
.legend .bar { width: 180px; height: 12px; border-radius: 3px;
               background: linear-gradient(90deg, var(--neg), #fff, var(--pos)); border: 1px solid var(--line); }
.query { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 16px 0; background: #fff; }
.query.wrong { border-left: 5px solid var(--neg); }
.query.right { border-left: 5px solid var(--pos); }
.qtext { font-size: 17px; margin: 0 0 6px; }
.meta { display: flex; gap: 14px; flex-wrap: wrap; align-items: center; font-size: 14px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; background: #eee; }
.badge.wrong { background: #f8d7da; color: #7a1020; } .badge.right { background: #d8e6f5; color: #123a66; }
.probs { display: flex; gap: 6px; } .prob { font-size: 12px; color: var(--muted); }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
@media (max-width: 800px) { .cols { grid-template-columns: 1fr; } }
.neighbor { background: var(--card); border: 1px solid #eee; border-radius: 6px; padding: 8px 10px; margin: 0 0 8px; }
.nhead { display: flex; gap: 10px; align-items: baseline; font-size: 13px; color: var(--muted); flex-wrap: wrap; }
.score { font-family: ui-monospace, Menlo, Consolas, monospace; font-weight: 600; }
.proponent .score { color: var(--pos); } .opponent .score { color: var(--neg); }
.ntext { margin: 4px 0 2px; }
mark.w { color: inherit; border-radius: 3px; padding: 0 1px; cursor: help; }
.special { font-size: 12px; color: var(--muted); }
.words { font-size: 12px; color: var(--muted); }
.differs { font-weight: 600; color: #7a1020; }
table.susp { border-collapse: collapse; width: 100%; font-size: 14px; }
table.susp th, table.susp td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
table.susp td.num { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: nowrap; }
.hist { display: block; margin: 6px 0; }
.toolbar { margin: 10px 0; font-size: 14px; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); }
form.ask { display: flex; gap: 8px; margin: 12px 0; flex-wrap: wrap; }
form.ask textarea { flex: 1 1 480px; font: inherit; padding: 8px; min-height: 60px; }
form.ask button { font: inherit; padding: 8px 18px; }
.error { color: #7a1020; background: #f8d7da; padding: 6px 10px; border-radius: 6px; }
.hidden { display: none; }
"""
