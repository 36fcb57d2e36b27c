#!/bin/sh
# Run one of the tool's commands with the DevRev token read from a file, never from the command
# line: DEVREV_API_TOKEN_FILE (a Docker/Kubernetes secret, a systemd credential), when
# DEVREV_API_TOKEN is not set already. Everything after it is the command, run with exec so its
# exit code (0 done, 75 go on at the next run, 1 or 2 a person must look) is the job's.
#
#   DEVREV_API_TOKEN_FILE=/run/secrets/devrev_api_token run-with-token.sh devrev-merge-contacts --csv ...
set -eu
if [ -z "${DEVREV_API_TOKEN:-}" ] && [ -n "${DEVREV_API_TOKEN_FILE:-}" ]; then
    if [ ! -r "$DEVREV_API_TOKEN_FILE" ]; then
        echo "error: DEVREV_API_TOKEN_FILE $DEVREV_API_TOKEN_FILE cannot be read" >&2
        exit 2
    fi
    DEVREV_API_TOKEN=$(tr -d '\r\n' < "$DEVREV_API_TOKEN_FILE")
    export DEVREV_API_TOKEN
fi
unset DEVREV_API_TOKEN_FILE
if [ "$#" -eq 0 ]; then
    set -- devrev-merge-contacts --help
fi
exec "$@"
