"""The Spark trading app: an ASGI service with the platform's safety features."""
