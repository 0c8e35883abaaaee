"""Fault tests with real processes ("Tests in CI"). Where each fault is tested:

- worker ``kill -9`` mid-epoch -> the job resumes on a new worker, one new version:
  tests/integration/test_finetune_e2e.py::test_killed_worker_job_resumes_through_the_api
  (through the API; result_version is model@2) and
  tests/integration/test_queue.py::test_killed_worker_job_resumes_from_checkpoint (embedded
  and Redis + PostgreSQL). Not repeated here.
- API ``kill -9`` during activations -> pointer consistent, a fresh API serves it:
  test_api_kill.py.
- corrupt active version -> the last good version serves, /readyz 200 with fallback:
  tests/api/test_fallback.py (the fallback's own tests).
- broker dead / black-holed -> 503 within the bound, nothing written; job database down ->
  inference keeps answering, job routes 503: test_broker_and_database.py.
"""
