"""Meaning-based reuse of cached answers, without the wrong answers.

normalise.py  the text a prompt is compared by (case, width, spaces, trailing punctuation)
guards.py     the near-miss guards: numbers, amounts, dates, units, entities, negations,
              comparisons and directions, intents, and the language must match
"""
