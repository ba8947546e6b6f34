"""``python -m downloaderApp`` is the ``downloader`` command."""

from __future__ import annotations

from downloaderApp.cli import main

raise SystemExit(main())
