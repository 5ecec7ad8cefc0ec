"""Turning finished runs into tables and reports."""
