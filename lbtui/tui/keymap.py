"""The console's keys: which actions change the balancer, the command palette's entries, and
the help screen's lines, by binding id (the bindings themselves are ``LbtuiApp.BINDINGS``).

Data, not behaviour: split from ``app.py`` so that adding an action's key, command and help
line is one place, and ``tests/tui/test_help.py`` checks every binding has its line.
"""

from __future__ import annotations

MUTATING = frozenset(
    {
        "kill",
        "slow",
        "errors",
        "hang",
        "restore",
        "drain",
        "toggle_disable",
        "weight",
        "breaker",
        "algorithm",
        "limits",
        "forward",
        "chaos",
    }
)
"""Actions that change the balancer: hidden and refused on a read-only console."""

OWN_ACTIONS = MUTATING | {
    "quit",
    "help",
    "filter",
    "clear_or_back",
    "view",
    "toggle_detail",
    "pause",
    "cycle_sort",
    "reverse_sort",
    "rate",
}
"""The console's own keys, which a dialog on top switches off."""

COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("kill", "Backend: kill", "kill the selected backend's process (or take it down) — confirmed"),
    ("slow", "Backend: slow down", "inject a delay with jitter on the selected backend"),
    ("errors", "Backend: inject errors", "answer a status instead of forwarding, on a share"),
    ("hang", "Backend: hang", "requests to the selected backend never get an answer"),
    ("chaos", "Chaos: run an experiment", "run a scenario file and watch its checks and verdict"),
    ("restore", "Backend: restore", "clear its fault; restart its process if dead"),
    ("drain", "Backend: drain / undrain", "no new requests; those in flight finish"),
    ("toggle_disable", "Backend: disable / enable", "take it out of rotation — confirmed"),
    ("weight", "Backend: set weight", "configured weight; 0 takes it out — confirmed"),
    ("breaker", "Backend: force breaker", "open / closed / disabled / auto"),
    ("algorithm", "Balancer: algorithm", "choose the balancing algorithm"),
    ("limits", "Balancer: limits", "global rps, burst, per-client rps, max in-flight"),
    ("forward", "Route: shift traffic", "set a route's forward weights between its groups"),
    ("rate(True)", "Load: raise rate", "offered rate × 1.25"),
    ("rate(False)", "Load: lower rate", "offered rate ÷ 1.25"),
    ("pause", "View: pause / resume", "freeze the display (data keeps coming)"),
    ("cycle_sort", "View: next sort column", "sort the backends by the next column"),
    ("reverse_sort", "View: reverse sort", "reverse the sort order"),
    ("filter", "View: filter", "filter backends and events by text"),
    ("view('main')", "View: main", "table, detail and events"),
    ("view('events')", "View: events", "the event log, full screen"),
    ("view('detail')", "View: detail", "the selected backend, full screen"),
    ("view('groups')", "View: groups and routes", "target groups, their shares, the routes"),
    ("help", "Help: keys", "every key and what it does"),
)

HELP_GROUPS = ("Navigate", "Selected backend", "Balancer")
HELP: dict[str, tuple[str, str]] = {
    "view.toggle_detail": ("Navigate", "the selected backend's detail, full screen (again: back)"),
    "view.main": ("Navigate", "main view: table, detail and events"),
    "view.events": ("Navigate", "the event log, full screen"),
    "view.detail": ("Navigate", "the selected backend's detail, full screen"),
    "view.groups": ("Navigate", "target groups (share, zone, L, M) and the routes in order"),
    "filter": ("Navigate", "filter backends and events (every column; terms are ANDed)"),
    "back": ("Navigate", "clear the filter, or back to the main view"),
    "sort.cycle": ("Navigate", "sort by the next column"),
    "sort.reverse": ("Navigate", "reverse the sort order"),
    "pause": ("Navigate", "pause / resume the display (data keeps coming)"),
    "help": ("Navigate", "this help"),
    "quit": ("Navigate", "quit (rolls back every fault this console set)"),
    "backend.kill": (
        "Selected backend",
        "kill: SIGKILL its fleet process, or a proxy-side down fault (asks first)",
    ),
    "backend.slow": (
        "Selected backend",
        "slow: delay ± jitter on a share of requests, for a duration",
    ),
    "backend.errors": ("Selected backend", "errors: answer a status (503…) on a share of requests"),
    "backend.hang": ("Selected backend", "hang: never answer (the proxy's timeout ends it)"),
    "backend.restore": (
        "Selected backend",
        "restore: clear its fault; restart its process if dead",
    ),
    "backend.drain": (
        "Selected backend",
        "drain (again: undrain): no new requests, in-flight finish",
    ),
    "backend.disable": ("Selected backend", "disable (asks first) / enable"),
    "backend.weight": ("Selected backend", "set its weight (0 asks first)"),
    "backend.breaker": (
        "Selected backend",
        "breaker: force open (asks first) / closed / disabled / auto",
    ),
    "balancer.algorithm": ("Balancer", "balancing algorithm"),
    "balancer.limits": ("Balancer", "limits: global rps and burst, per-client rps, max in-flight"),
    "route.forward": ("Balancer", "shift a route's traffic between its groups (canary weights)"),
    "chaos.run": ("Balancer", "run a chaos experiment: live timeline, checks, then the verdict"),
    "load.up": ("Balancer", "load generator rate × 1.25"),
    "load.down": ("Balancer", "load generator rate ÷ 1.25"),
}
"""What each binding does, by binding id, in the order help lists them; every binding has a
line here and every line a binding (``tests/tui/test_help.py``)."""

WIDGET_KEYS: list[tuple[str, str]] = [
    ("↑ ↓ PgUp PgDn", "move in the table or scroll a pane (mouse wheel too)"),
    ("Tab / Shift+Tab", "next / previous pane"),
    ("click a header", "sort by that column (again: reverse)"),
    ("Ctrl+P", "command palette: every action by name"),
]
"""Keys the widgets answer to themselves (not the app's bindings)."""

FIGURES: list[tuple[str, str]] = [
    ("req/s · err%", "over the last 1 s, sliding (p50/p99 over 10 s; — when under 10 samples)"),
    ("imbalance L", "Σ |rate − weighted share| over each pool's eligible backends; 0 = even"),
    ("overload M", "eligible backends whose demand (sent + refused at the cap) > max_rps"),
]
"""What the header's and table's figures mean (``lbtui.core.window``, ``lbtui.core.balance``)."""
