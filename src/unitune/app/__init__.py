"""`unitune serve`: the web app and HTTP API over the library, with a persistent job queue."""
