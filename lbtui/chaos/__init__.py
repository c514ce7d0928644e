"""Chaos experiments: scripted faults, steady-state checks, reports."""
