"""Intake: source records become events and row loads, each handled where its customer's state lives."""
