"""Checking backups after `backup` wrote them: the per-file verification (`verification`) and
what to do with a backup folder found damaged before a merge (`damaged`)."""
