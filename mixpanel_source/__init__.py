"""The Mixpanel source side of the pipeline: HTTP client, rate limits, download, cache, demo source.

It writes the download cache (`cache.py`); the data layer (`database`) reads it from there.
"""
