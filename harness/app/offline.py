"""No network, no waiting: Hugging Face's clients put into offline mode when the hub cannot be reached.

Without a network, `datasets`, `huggingface_hub` and lm-eval retry every hub request with
back-off before they fall back to the local cache or give up: a suite with two optional hub sets
takes 3 minutes of "Retrying in 8s" lines on stderr to say they are not cached. When the hub's host
name does not even resolve, no request can succeed, so the CLI sets `HF_HUB_OFFLINE=1` and
`HF_DATASETS_OFFLINE=1` before any of those libraries is imported (they read the variables once,
at import): cached data loads as usual, anything else is a one-line error at once. A user's
own setting of either variable is left alone, and so is a host that is slow to answer (only a
definite failure to resolve counts).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"
RESOLVE_WAIT_S = 2.0  # a resolver that has not answered by then is slow, not absent: assume a network


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).hostname or "huggingface.co"


def hub_unresolvable(host: str) -> bool:
    """Whether resolving `host` failed outright (no DNS, no network) within RESOLVE_WAIT_S."""
    failed: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            failed.append(True)
        except OSError:  # anything else says nothing definite about the network
            pass

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(RESOLVE_WAIT_S)
    return bool(failed)


def go_offline_without_network() -> bool:
    """Set the offline variables when the hub's host cannot be resolved; True when it did."""
    if any(name in os.environ for name in OFFLINE_VARIABLES):
        return False
    if not hub_unresolvable(hub_host()):
        return False
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    return True
