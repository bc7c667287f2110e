"""The built-in steps, one module per verb, registered by name.

uses:            module
hash_prompt      tasks/hash_prompt.py
cache_lookup     tasks/cache.py
cache_store      tasks/cache.py
classify         tasks/classify.py
call_slm         tasks/call_slm.py
call_llm         tasks/call_llm.py
list_documents   tasks/documents.py
read_document    tasks/documents.py
split_text       tasks/split_text.py
write_summary    tasks/batch_outputs.py
write_index      tasks/batch_outputs.py
check_batch      tasks/batch_outputs.py
run_pipeline     tasks/run_pipeline_step.py
"""

from flows.registry import register
from tasks.batch_outputs import (
    CheckRequest,
    IndexRequest,
    SummaryRequest,
    check_batch,
    write_index,
    write_summary,
)
from tasks.cache import LookupRequest, StoreRequest, cache_lookup, cache_store
from tasks.call_llm import LlmRequest, call_llm
from tasks.call_slm import SlmRequest, call_slm
from tasks.classify import ClassifyRequest, classify
from tasks.documents import ListRequest, ReadRequest, list_documents, read_document
from tasks.hash_prompt import HashRequest, hash_prompt
from tasks.run_pipeline_step import SubpipelineRequest, run_pipeline_step
from tasks.split_text import SplitRequest, split_text

BUILTIN_STEPS = (
    "hash_prompt",
    "cache_lookup",
    "cache_store",
    "classify",
    "call_slm",
    "call_llm",
    "list_documents",
    "read_document",
    "split_text",
    "write_summary",
    "write_index",
    "check_batch",
    "run_pipeline",
)

register("hash_prompt", hash_prompt, HashRequest, summary="sha256 request key")
register("cache_lookup", cache_lookup, LookupRequest, summary="exact-match prompt cache lookup")
register("cache_store", cache_store, StoreRequest, summary="store a valid answer in the prompt cache")
register("classify", classify, ClassifyRequest, summary="route: simple or complex")
register("call_slm", call_slm, SlmRequest, summary="answer with the small model", model_call=True)
register("call_llm", call_llm, LlmRequest, summary="answer with the large model", model_call=True)
register("list_documents", list_documents, ListRequest, summary="describe a directory or JSONL file for for_each")
register("read_document", read_document, ReadRequest, summary="read one document or fail with the reason")
register("split_text", split_text, SplitRequest, summary="split a long text into parts")
register("write_summary", write_summary, SummaryRequest, summary="write DESTINATION/ID.md atomically")
register("write_index", write_index, IndexRequest, summary="write the batch index JSONL atomically")
register("check_batch", check_batch, CheckRequest, summary="fail when too many items failed")
register("run_pipeline", run_pipeline_step, SubpipelineRequest, summary="run another pipeline inline")
