"""The built-in steps, one module per verb, registered by name.

uses:          module
hash_prompt    tasks/hash_prompt.py
cache_lookup   tasks/cache.py
cache_store    tasks/cache.py
classify       tasks/classify.py
call_slm       tasks/call_slm.py
call_llm       tasks/call_llm.py
"""

from flows.registry import register
from tasks.cache import LookupRequest, StoreRequest, cache_lookup, cache_store
from tasks.call_llm import LlmRequest, call_llm
from tasks.call_slm import SlmRequest, call_slm
from tasks.classify import ClassifyRequest, classify
from tasks.hash_prompt import HashRequest, hash_prompt

BUILTIN_STEPS = ("hash_prompt", "cache_lookup", "cache_store", "classify", "call_slm", "call_llm")

register("hash_prompt", hash_prompt, HashRequest, summary="sha256 request key")
register("cache_lookup", cache_lookup, LookupRequest, summary="exact-match prompt cache lookup")
register("cache_store", cache_store, StoreRequest, summary="store a valid answer in the prompt cache")
register("classify", classify, ClassifyRequest, summary="route: simple or complex")
register("call_slm", call_slm, SlmRequest, summary="answer with the small model", model_call=True)
register("call_llm", call_llm, LlmRequest, summary="answer with the large model", model_call=True)
