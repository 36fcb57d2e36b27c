"""What every script shares below the domain: the command-line contract (exit codes, logging,
redaction), durable files, time, and the bounded fan-out of work to threads."""
