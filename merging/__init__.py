"""The merge of one merge set and what decides it: the engine, the plan over the CSV, the live
checks, the call estimates, the preview's scope, the preflight and canary checks, and the status
screen of a run."""
