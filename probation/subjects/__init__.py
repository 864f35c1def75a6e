"""Subjects: the people supervised, their IIN and biometric templates."""
