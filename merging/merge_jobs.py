"""DevRev's own record of a merge: the `merge_revuser` job behind a rev-users.merge.

rev-users.merge answers with an empty acknowledgement; the merge itself runs as a job that
can complete, fail or stay in progress ([C] S15 jobs.get / jobs.list). When a duplicate is not
retired by the end of --merge-timeout, the engine reads its job to tell "still running, come
back later" from "failed, ask again". How a job names its contacts is [I]
(devrev_api.assumptions.MERGE_JOB_CATEGORY).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from devrev_api import assumptions as facts
from devrev_api.errors import DevRevError, RunWideFault
from devrev_client import DevRevClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeJob:
    """One merge_revuser job as DevRev reads it: `progress` in percent (None: not given)."""
    id: str
    state: str
    progress: int | None = None
    retry_count: int | None = None

    @property
    def running(self) -> bool:
        return self.state in facts.MERGE_JOB_RUNNING_STATES

    @property
    def failed(self) -> bool:
        return self.state == facts.MERGE_JOB_FAILED_STATE

    def describe(self) -> str:
        """'job <id> in_progress, 40 %' (the set's line and the journal)."""
        progress = "" if self.progress is None else f", {self.progress} %"
        return f"job {self.id} {self.state}{progress}"


@dataclass(frozen=True)
class JobLookup:
    """What jobs.list says of one duplicate's merge: its newest job, or None with `unreadable`
    saying why DevRev's jobs could not be read (None: read, and none names the duplicate)."""
    job: MergeJob | None
    unreadable: str | None = None


def merge_job_of(client: DevRevClient, duplicate_id: str) -> JobLookup:
    """The newest merge_revuser job naming `duplicate_id` among this token's jobs (at most
    MERGE_JOB_PAGES pages, newest first). A refused or failing jobs.list is not this set's
    failure: JobLookup(None, unreadable=<why>). Raises only what stops the run (RunWideFault,
    a rejected token)."""
    try:
        me = client.get_self().get("id")
        pages = client.list_jobs(facts.MERGE_JOB_CATEGORY, created_by=me if isinstance(me, str) else None)
        for number, page in enumerate(pages, start=1):
            for job in page:
                if _names(job, duplicate_id):
                    return JobLookup(_job(job))
            if number >= facts.MERGE_JOB_PAGES:
                break
    except RunWideFault:
        raise
    except DevRevError as exc:
        if exc.status == 401:
            raise
        log.warning("DevRev's merge jobs could not be read (%s): deciding from the contact alone", exc)
        return JobLookup(None, unreadable=str(exc))
    return JobLookup(None)


def _names(job: dict, contact_id: str) -> bool:
    """[I] A merge job names its contacts as values of its metadata_list."""
    return job.get("job_category") == facts.MERGE_JOB_CATEGORY and any(
        isinstance(m, dict) and m.get("value") == contact_id for m in job.get("metadata_list") or [])


def _job(job: dict) -> MergeJob:
    progress, retries = job.get("progress"), job.get("retry_count")
    return MergeJob(id=str(job.get("id") or job.get("job_id") or "?"), state=str(job.get("state") or "unknown"),
                    progress=progress if isinstance(progress, int) and not isinstance(progress, bool) else None,
                    retry_count=retries if isinstance(retries, int) and not isinstance(retries, bool) else None)
