"""
tcbridge's tests.
"""
