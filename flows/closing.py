"""Flow `generation` (deployment generation/close): close the generation of a run that
ended without closing it.

A run closes its own generation when it fails or is cancelled (flows/publishing.py). A
run whose machine died cannot: it is marked Crashed by the silent-run automation and
rerun while its run count allows (deployments/crashes.py), and the rerun continues the
generation. Past that guard, or when a run is cancelled while no process is left to
notice, nothing would close it until the story's next run or the nightly reprocess.
The "crashed run closed" automation starts this flow for every Crashed or Cancelled run
of the story, illustrations and narration deployments; the flow reads the run and
closes its running generation (failed, or cancelled) and deletes the files only it used,
unless the run is going to be rerun. Closing twice, or a generation its run already
closed, changes nothing.
"""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from storyloom import services
from tasks.media import delete_orphaned_media

RESOURCE_PREFIX = "prefect.flow-run."


@flow(
    name="generation",
    description="Close the generation of a run that crashed past its reruns or was "
    "cancelled while no process was left to close it (started by an automation).",
)
def close_generation(flow_run: str, reruns: int = 0) -> list[str]:
    """Close the running generations of `flow_run` (a flow run id, or the event resource
    id `prefect.flow-run.<id>`) if it ended Crashed past `reruns` starts, or Cancelled;
    returns the ids of the generations closed."""
    logger = get_run_logger()
    run_id = UUID(flow_run.removeprefix(RESOURCE_PREFIX))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    state = run.state
    story_id = run.parameters.get("story_id")
    if state is None or not isinstance(story_id, str):
        logger.info("run %s opens no generation: nothing to close", run_id)
        return []
    if state.type == StateType.CRASHED and run.run_count > reruns:
        reason = (
            f"its flow run crashed after {run.run_count} start(s) and is not rerun: "
            f"{state.message or 'no reason given'}"
        )
        cancelled = False
    elif state.type == StateType.CANCELLED:
        reason = f"cancelled: {state.message or 'the run was cancelled'}"
        cancelled = True
    else:
        logger.info("run %s is %s: its generation is left to it", run_id, state.name)
        return []
    store = services.store()
    closed = [
        info.id
        for info in store.generations(story_id, limit=20)
        if info.status == "running" and info.flow_run_id == str(run_id)
    ]
    for generation_id in closed:
        if cancelled:
            store.cancel(generation_id, reason)
        else:
            store.fail(generation_id, reason)
        logger.info("generation %s of story %s closed: %s", generation_id, story_id, reason)
    if closed:
        deleted = delete_orphaned_media(story_id)
        logger.info("%d file(s) only it used deleted", len(deleted))
    return closed
