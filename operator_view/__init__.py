"""What the operator sees: the run reports (JSON, CSV, HTML), the preview and result screens, and
the words and numbers they share (`summary`)."""
