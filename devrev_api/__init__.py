"""The DevRev client's parts: its errors, configuration, pacing, retry policy, artifact downloads,
and every inferred fact about DevRev's API (`assumptions`), kept apart so `devrev_client` reads as
the calls alone."""
