"""Job records, job states and the job-spec schemas shared by the API and the worker."""
