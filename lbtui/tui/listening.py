"""The listeners panel's text: lbtui's own listeners, one line each (pure, tested without a screen).

Shown when there is something to say beyond the one plain listener the totals bar already
names: several listeners, an HTTPS one, a redirect, or WebSocket tunnels open.
"""

from __future__ import annotations

from rich.text import Text

from lbtui.control.model import ListenerView, Snapshot


def worth_showing(snapshot: Snapshot) -> bool:
    ls = snapshot.listeners
    return len(ls) > 1 or any(v.tls or v.redirect_https or v.tunnels for v in ls)


def listener_line(v: ListenerView) -> Text:
    text = Text(no_wrap=True)
    text.append(f"{v.name:<14.14}", "bold")
    text.append(f" {'https' if v.tls else 'http':<5}", "green" if v.tls else "")
    text.append(f" {v.address:<22}", "")
    text.append(f" {v.connections:>5} conn", "")
    if v.tunnels:
        text.append(f" {v.tunnels:>4} tunnels", "cyan")
    if v.redirect_https:
        text.append(f" → 308 to {v.redirect_https}", "bright_black")
    elif v.certificates:
        names = ", ".join(n for names in v.certificates for n in names[:1])
        text.append(f" certs: {names}", "bright_black")
    return text


def listeners_text(snapshot: Snapshot) -> Text:
    out = Text(no_wrap=True)
    out.append("listeners\n", "bold")
    for i, v in enumerate(snapshot.listeners):
        if i:
            out.append("\n")
        out.append_text(listener_line(v))
    return out
