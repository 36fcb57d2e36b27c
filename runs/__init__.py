"""A run over merge sets, shared by the merge and the restore: the step journal that makes a
stop resumable, and the run's target (sandbox or DevRev), client and workers (`support`)."""
