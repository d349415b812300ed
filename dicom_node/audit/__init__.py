"""The audit database: who sent what, when, which model judged it, what went back, what failed."""
