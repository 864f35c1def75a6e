"""Cases: court orders under supervision, the caseload, and who may see which case."""
