"""``python -m rr``: the ``rr`` command (see ``rr.cli``)."""

from rr.cli import main

raise SystemExit(main())
