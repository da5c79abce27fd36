"""``python -m convai_async.testing``: serve a FakeConvai on loopback."""

from . import main

main()
