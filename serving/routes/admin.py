"""Admin routes: reload the served model, list the registered versions, promote one.

Every admin action, done or refused, is written to the audit log with who asked.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from mlflow.exceptions import MlflowException

from registry import aliases
from serving.problems import responses
from serving.routes.deps import AdminCaller, App
from serving.schemas import AdminModelsResponse, AdminPromoteRequest, AdminReloadResponse

router = APIRouter()


@router.post("/v1/admin/reload", response_model=AdminReloadResponse,
             summary="Load the version the alias points at now (admin)",
             responses=responses(400, 401, 403, 409, 413, 422, 503))
def reload(who: AdminCaller, shared: App) -> AdminReloadResponse:
    holder, watcher, audit = shared.holder, shared.watcher, shared.audit
    if watcher is None:
        audit.record(who.name, "reload", "refused: no registry watcher")
        raise HTTPException(409, "this service was started without a registry to reload from")
    before = holder.model.version if holder.model else None
    swapped = watcher.check()
    after = holder.model.version if holder.model else None
    result = (f"swapped {before} -> {after}" if swapped else
              f"failed: {holder.last_error}" if holder.last_error else f"kept {after}")
    audit.record(who.name, "reload", result)
    if holder.last_error and not swapped:
        raise HTTPException(503, f"reload failed, still serving {before}: {holder.last_error}")
    return AdminReloadResponse(swapped=swapped, previous_version=before, version=after)


@router.get("/v1/admin/models", response_model=AdminModelsResponse,
            summary="The registered versions, their aliases and promotions (admin)",
            responses=responses(401, 403, 404, 413, 422, 503))
def list_models(who: AdminCaller, shared: App) -> AdminModelsResponse:
    settings, audit = shared.settings, shared.audit
    try:
        versions = aliases.model_versions(settings.model_name,
                                           aliases.client_for(settings.tracking_uri))
    except LookupError as error:
        audit.record(who.name, "list_models", f"failed: {error}")
        raise HTTPException(404, str(error)) from error
    except MlflowException as error:
        audit.record(who.name, "list_models", f"failed: {error}")
        raise HTTPException(503, f"the registry cannot be read: {error}") from error
    audit.record(who.name, "list_models", f"{len(versions)} versions")
    return AdminModelsResponse(model_name=settings.model_name, versions=versions)


@router.post("/v1/admin/promote", response_model=AdminModelsResponse,
             summary="Make a registered version the champion (admin); served after a reload",
             responses=responses(400, 401, 403, 404, 413, 422))
def promote(body: AdminPromoteRequest, who: AdminCaller, shared: App) -> AdminModelsResponse:
    settings, audit = shared.settings, shared.audit
    try:
        client = aliases.client_for(settings.tracking_uri)
        move = aliases.set_champion(settings.model_name, body.version, action="promote",
                                     reason=body.reason, by=who.name, client=client)
        versions = aliases.model_versions(settings.model_name, client)
    except LookupError as error:
        audit.record(who.name, "promote", f"refused: {error}", version=body.version)
        raise HTTPException(404, str(error)) from error
    audit.record(who.name, "promote", f"champion {move.previous} -> {move.version}",
                 version=body.version, reason=body.reason)
    if shared.watcher is not None:
        shared.watcher.check()
    return AdminModelsResponse(model_name=settings.model_name, versions=versions)
