"""End-to-end workflows composed from the library's pieces (``pedseg demo``)."""
