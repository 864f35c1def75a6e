"""Process composition: embedded servers, ingestion workers and the scheduler."""
