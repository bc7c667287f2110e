"""One typed flow per pipeline (flows/orchestration/pipeline_flows.py): the parameter schema the UI's run form
is drawn from, the entrypoints prefect.yaml names, and a run's result and artifacts."""

from __future__ import annotations

import textwrap
import uuid

import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

import flows.orchestration.pipeline_flows as pipeline_flows
from flows.orchestration.flow import run_pipeline
from flows.orchestration.pipeline_flows import attribute_name, build_flow, flow_for
from tasks.core.errors import InputError


def schema_of(flow: Flow) -> dict:
    return parameter_schema(flow).model_dump_for_openapi()


def test_answer_inputs_are_named_typed_described_parameters():
    schema = schema_of(flow_for("answer"))
    props = schema["properties"]
    assert list(props) == [
        "prompt",
        "system",
        "task",
        "namespace",
        "max_tokens",
        "temperature",
        "bypass_cache",
        "cache",
        "messages",
        "large_model",
    ]
    assert schema["required"] == ["prompt"]
    assert props["prompt"] == {
        "title": "prompt",
        "type": "string",
        "position": 0,
        "description": "The question or instruction to answer.",
        "minLength": 1,
        "pattern": r"\S",
    }
    assert props["max_tokens"]["type"] == "integer" and props["max_tokens"]["default"] == 256
    assert props["temperature"]["type"] == "number"  # one number field, not a union
    assert props["bypass_cache"] == {**props["bypass_cache"], "type": "boolean", "default": False}


def test_every_input_type_maps_to_a_form_field(tmp_path):
    path = tmp_path / "types.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: all-types
            version: "1"
            description: Every input type.
            inputs:
              s: {type: string, description: "A long\\n   description: with a colon."}
              i: {type: integer, default: 1}
              n: {type: number, default: 0.5}
              b: {type: boolean, default: true}
              l: {type: list, default: [1, 2]}
              o: {type: object, default: {a: 1}}
            nodes:
              key: {uses: hash_prompt, with: {prompt: "{{ inputs.s }}"}}
            output: "{{ key }}"
            """
        )
    )
    flow = flow_for(str(path))
    assert flow.name == "all-types" and flow.fn.__name__ == "all_types" and flow.description == "Every input type."
    props = schema_of(flow)["properties"]
    assert {k: v["type"] for k, v in props.items()} == {
        "s": "string",
        "i": "integer",
        "n": "number",
        "b": "boolean",
        "l": "array",
        "o": "object",
    }
    assert props["s"]["description"] == "A long description: with a colon."
    assert props["l"]["default"] == [1, 2] and props["o"]["default"] == {"a": 1}


def test_a_reserved_input_name_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text('name: r\nversion: "1"\ninputs: {wait_for: {type: string}}\nnodes: {key: {uses: hash_prompt}}\noutput: x\n')
    from flows.language import catalog

    with pytest.raises(InputError, match="input 'wait_for' is reserved by Prefect flows; rename it"):
        build_flow(catalog.load(str(path)))


def test_each_pipeline_is_an_attribute_and_an_entrypoint():
    assert pipeline_flows.answer is flow_for("answer")
    assert "sentiment" in dir(pipeline_flows)
    assert attribute_name("my-pipeline") == "my_pipeline"
    with pytest.raises(AttributeError, match="no pipeline flow 'nope'"):
        pipeline_flows.nope  # noqa: B018
    loaded = load_flow_from_entrypoint("flows/orchestration/pipeline_flows.py:sentiment")
    assert loaded.name == "sentiment" and list(schema_of(loaded)["properties"]) == ["text", "namespace"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect")
async def test_the_typed_flow_runs_like_run_pipeline_and_publishes_its_artifacts(peer, redis_cache):
    peer.responder = lambda protocol, body: "four"
    prompt = f"What is 2+2? ({uuid.uuid4().hex})"  # not in Prefect's result cache from other tests
    state = await flow_for("answer")(prompt=prompt, namespace="typed", return_state=True)
    typed = await state.aresult()
    legacy = await run_pipeline("answer", {"prompt": prompt, "namespace": "typed"})
    assert typed["output"] == {**legacy["output"], "cache": "miss"} and legacy["output"]["cache"] == "hit"

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    by_type = {a.type: a.data for a in artifacts}
    assert by_type["result"] == typed
    assert "**Path:** key → lookup → route → small → small_check → store → output" in by_type["markdown"]


def test_input_constraints_reach_the_parameter_schema():
    props = schema_of(flow_for("answer"))["properties"]
    assert (props["max_tokens"]["minimum"], props["max_tokens"]["maximum"]) == (1, 32768)
    assert (props["temperature"]["minimum"], props["temperature"]["maximum"]) == (0, 2)
    assert props["prompt"]["minLength"] == 1 and props["prompt"]["pattern"] == r"\S"


def test_an_input_with_a_null_default_may_be_null():
    props = schema_of(flow_for("summarise-document"))["properties"]
    assert props["text"]["anyOf"] == [{"type": "string"}, {"type": "null"}] and props["text"]["default"] is None
    assert props["error"]["anyOf"] == [{"type": "string"}, {"type": "null"}]


def test_a_deployment_schema_refuses_undeclared_parameters():
    deployment = flow_for("answer").to_deployment(name="answer")
    schema = deployment._parameter_openapi_schema.model_dump(exclude_unset=True)
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(schema_of(flow_for("answer"))["properties"])


@pytest.mark.slow
def test_the_server_refuses_bad_parameters_at_submission_and_runs_summarise_document(served_prefect, tmp_path):
    """Raw REST calls (no client-side checks): the server itself refuses what the pipeline's inputs forbid."""
    import httpx

    api = served_prefect.api_url

    def create(deployment: str, parameters: dict) -> httpx.Response:
        found = httpx.get(f"{api}/deployments/name/{deployment}/{deployment}").json()
        return httpx.post(f"{api}/deployments/{found['id']}/create_flow_run", json={"parameters": parameters})

    for parameters, words in [
        ({"prompt": "hi", "max_tokens": -5}, "-5 is less than the minimum of 1"),
        ({"prompt": "hi", "temperature": 3}, "3 is greater than the maximum of 2"),
        ({"prompt": ""}, "should be non-empty"),
        ({"prompt": "   "}, "does not match"),
        ({"prompt": "hi", "colour": "red"}, "Additional properties are not allowed ('colour' was unexpected)"),
    ]:
        response = create("answer", parameters)
        assert response.status_code == 409, (parameters, response.text)
        assert words in response.text, (parameters, response.text)

    # summarise-document with its optional `text`/`error` left out, as the UI's run form sends it, and given as null
    from flows.orchestration.rest_client import RestCaller

    document = served_prefect.folder / "data" / "doc-rest.txt"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text("The quarterly report shows revenue up four percent on lower costs.")
    with RestCaller(api) as caller:
        for extra in ({}, {"text": None, "error": None}):
            params = {"id": "doc-rest", "source": str(document), "destination": str(served_prefect.folder / "data" / "out")}
            called = caller.call("summarise-document", params | extra, timeout=120)
            assert called.state == "COMPLETED", called
            assert called.result["output"]["status"] == "ok"
