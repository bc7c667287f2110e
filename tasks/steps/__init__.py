"""The built-in steps, one module per verb, described by `BUILTIN_STEPS`: plain async functions, made
Prefect tasks by `Step.task` only when an orchestrated run asks (see `tasks.core.steps`).

The pipeline language's registry (`flows.language.registry`) collects them; a step
module never imports the registry.

uses:            module
hash_prompt      tasks/steps/hash_prompt.py
cache_lookup     tasks/steps/cache.py
cache_store      tasks/steps/cache.py
classify         tasks/steps/classify.py
call_slm         tasks/steps/call_slm.py
call_llm         tasks/steps/call_llm.py
check_answer     tasks/steps/check_answer.py
list_documents   tasks/steps/documents.py
read_document    tasks/steps/documents.py
split_text       tasks/steps/split_text.py
write_summary    tasks/steps/batch_outputs.py
write_index      tasks/steps/batch_outputs.py
check_batch      tasks/steps/batch_outputs.py
run_pipeline     tasks/steps/run_pipeline.py
"""

from tasks.core.steps import Step
from tasks.steps.batch_outputs import (
    CheckRequest,
    IndexRequest,
    SummaryRequest,
    check_batch,
    write_index,
    write_summary,
)
from tasks.steps.cache import LookupRequest, StoreRequest, cache_lookup, cache_store
from tasks.steps.call_llm import LlmRequest, call_llm
from tasks.steps.call_llm import task_options as llm_task_options
from tasks.steps.call_slm import SlmRequest, call_slm
from tasks.steps.call_slm import task_options as slm_task_options
from tasks.steps.check_answer import CheckRequest as AnswerCheckRequest
from tasks.steps.check_answer import check_answer
from tasks.steps.classify import ClassifyRequest, classify
from tasks.steps.documents import ListRequest, ReadRequest, list_documents, read_document
from tasks.steps.hash_prompt import HashRequest, hash_prompt
from tasks.steps.run_pipeline import SubpipelineRequest, run_pipeline_step
from tasks.steps.split_text import SplitRequest, split_text

#: every built-in step, in the order `frugal list` shows them
BUILTIN_STEPS: tuple[Step, ...] = (
    Step("hash_prompt", hash_prompt, HashRequest, summary="sha256 request key"),
    Step("cache_lookup", cache_lookup, LookupRequest, summary="exact-match prompt cache lookup"),
    Step("cache_store", cache_store, StoreRequest, summary="store a valid, accepted answer in the prompt cache"),
    Step("classify", classify, ClassifyRequest, summary="route: simple or complex"),
    Step(
        "call_slm",
        call_slm,
        SlmRequest,
        summary="answer with the small model",
        model_call=True,
        task_options=slm_task_options,
    ),
    Step(
        "call_llm",
        call_llm,
        LlmRequest,
        summary="answer with the large model",
        model_call=True,
        task_options=llm_task_options,
    ),
    Step("check_answer", check_answer, AnswerCheckRequest, summary="accept or reject a model answer"),
    Step("list_documents", list_documents, ListRequest, summary="describe a directory or JSONL file for for_each"),
    Step("read_document", read_document, ReadRequest, summary="read one document or fail with the reason"),
    Step("split_text", split_text, SplitRequest, summary="split a long text into parts"),
    Step("write_summary", write_summary, SummaryRequest, summary="write DESTINATION/ID.md atomically"),
    Step("write_index", write_index, IndexRequest, summary="write the batch index JSONL atomically"),
    Step("check_batch", check_batch, CheckRequest, summary="fail when too many items failed"),
    Step("run_pipeline", run_pipeline_step, SubpipelineRequest, summary="run another pipeline inline"),
)
