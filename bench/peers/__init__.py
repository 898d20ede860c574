"""The peers conveyor is compared with, each in its own module run inside ``bench/.venv-peers``.

Every peer module (``rq_app``, ``arq_app``, ...) imports only the standard library, ``redis``
and the peer itself, so it runs in the peers' virtualenv; ``conveyor_app`` is the same shape
for conveyor and runs in the project environment. ``bench.rows`` says how each one's worker is
started (the configuration written next to each row of the table).
"""
