"""Acceptance checks on model answers: pure functions, one module per kind of defect.

Each check returns a `Rejection` (a reason code and a one-line detail) or None.
`tasks.checks.policy.run_checks` runs them all on one answer with the node's
thresholds; the `check_answer` step (tasks/steps/check_answer.py) turns the result
into a verdict and an action (escalate, retry, fail, flag).

reason code      module          what it means
no_answer        policy          the model call failed: there is no answer to check
invalid          constraints     the answer breaks the node's labels or JSON schema
truncated        truncation      generation stopped at the token limit (finish_reason 'length')
empty            degenerate      nothing but white space
loop             degenerate      a repetition loop: one sentence again and again, or repeated word n-grams
echo             degenerate      the answer repeats the prompt (or the system prompt) instead of answering
too_long         constraints     more words than `max_words` or characters than `max_chars`
language         language        not in the language the prompt asked for or was written in
low_confidence   confidence      mean token log-probability below the threshold
low_label_prob   confidence      the chosen label's probability below the threshold
low_margin       confidence      the chosen label barely beat the next one
"""

from tasks.checks.rejection import REASON_CODES, Rejection

__all__ = ["REASON_CODES", "Rejection"]
