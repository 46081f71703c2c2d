"""
Syncing: the cycle (pull every source, build and validate the feed into a
file: L{cycle}), publishing it as one step (shrink guard, cache files,
swap, Carbon Black sync: L{publish}), the timer and write mode that run
cycles (L{service}), what a cycle works with (L{work}) and why one
published nothing (L{errors}).  Import each from its module.
"""
