"""The restore: reading a merge's backup folders back into sets (`backup_sets`) and undoing a
merge from them (`engine`)."""
