"""Small helpers shared by test modules."""

from __future__ import annotations

import socket
from typing import Any

#: A small profile in the shape of the shared examples (a subset of examples/seed_profile.yaml): the default of the
#: ``make_adapter`` fixture.
PROFILE: dict[str, Any] = {
    "user_name": "Sam Rivera",
    "assistant_name": "Nova",
    "facts": [
        {"topic": "dog's name", "value": "Buddy", "aliases": ["Bud"]},
        {"topic": "birthday", "value": "March 14", "aliases": ["14 March", "Mar 14"]},
        {"topic": "home city", "value": "Portland", "aliases": []},
        {"topic": "employer", "value": "Cedar Labs", "aliases": []},
    ],
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
