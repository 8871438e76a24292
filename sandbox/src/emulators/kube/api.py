"""What each REST verb does to one kind, independent of HTTP: the API server's generic registry.

Create fills `metadata.name` from `generateName`, drops `status` of kinds that have a status
subresource, defaults, validates and stores. Replace (PUT) requires the URL and body names to
agree, honours the `resourceVersion` and `uid` preconditions (a custom resource must carry a
`resourceVersion`, as `AllowUnconditionalUpdate` is false for CRDs), and keeps the stored status
when the kind has a status subresource; a write to `/status` changes only status. Patch applies
the patch to the stored object, then takes the replace path; a `resourceVersion` inside the
patch is a precondition too. Delete honours `preconditions` and `propagationPolicy` (Orphan
strips the owner reference from dependents; otherwise they are deleted with the owner).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from emulators.kube import errors, patching
from emulators.kube.defaults import initial_status
from emulators.kube.objects import ObjectStore, clone
from emulators.kube.resources import ResourceKind
from emulators.kube.schemas import builtin_schema
from emulators.kube.selectors import parse_field_selector, parse_label_selector
from emulators.kube.validation import Validator

JSON = dict[str, Any]


class KubeApi:
    def __init__(self, store: ObjectStore, validator: Validator) -> None:
        self.store = store
        self.validator = validator
        self._next_cluster_ip = 10

    # --- helpers ----------------------------------------------------------------------------

    def serve(self, rk: ResourceKind, version: str, obj: JSON) -> JSON:
        out: JSON = {"kind": rk.kind, "apiVersion": rk.api_version(version)}
        out.update((k, clone(v)) for k, v in obj.items() if k not in out)
        return out

    def existing(self, rk: ResourceKind, namespace: str | None, name: str) -> JSON:
        obj = self.store.get(rk, namespace if rk.namespaced else None, name)
        if obj is None:
            raise errors.not_found(plural=rk.plural, group=rk.group, name=name)
        return obj

    def decode(
        self,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        body: Any,
        *,
        name: str | None = None,
    ) -> JSON:
        """A request body checked against the URL, with kind, apiVersion and namespace set."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was not a JSON object")
        obj: JSON = clone(body)
        expected = rk.api_version(version)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not rk.builtin and not kind:
            raise errors.bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if not rk.builtin and not api_version:
            raise errors.bad_request(
                f"Object 'apiVersion' is missing in '{json.dumps(body)[:200]}'"
            )
        if kind and kind != rk.kind:
            raise errors.bad_request(
                f"the kind of the object ({kind}) does not match the kind on the URL ({rk.kind})"
            )
        if api_version and api_version != expected:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({expected})"
            )
        obj["kind"], obj["apiVersion"] = rk.kind, expected
        meta = obj.setdefault("metadata", {})
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be a JSON object")
        if rk.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if name is not None and meta.get("name") != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        return obj

    def _allocate(self, rk: ResourceKind, obj: JSON, old: JSON | None) -> None:
        """Service cluster IPs: allocated at creation, kept when an update leaves them out."""
        if (rk.group, rk.kind) != ("", "Service") or not isinstance(obj.get("spec"), dict):
            return
        spec = obj["spec"]
        if spec.get("type") == "ExternalName":
            return
        old_spec = (old or {}).get("spec") or {}
        if "clusterIP" not in spec and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if "clusterIP" not in spec:
            n = self._next_cluster_ip
            self._next_cluster_ip += 1
            spec["clusterIP"] = f"10.96.{n // 256 % 256}.{n % 256}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])

    @staticmethod
    def check_preconditions(rk: ResourceKind, old: JSON, meta: JSON) -> None:
        old_meta = old["metadata"]
        name = old_meta["name"]
        uid = meta.get("uid")
        if uid and uid != old_meta["uid"]:
            raise errors.conflict(
                plural=rk.plural,
                group=rk.group,
                name=name,
                why=f"Precondition failed: UID in precondition: {uid}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta["resourceVersion"]:
            raise errors.conflict(plural=rk.plural, group=rk.group, name=name)

    def commit(
        self, rk: ResourceKind, version: str, old: JSON, new: JSON, *, dry_run: bool
    ) -> JSON:
        new = self.validator.normalize(rk, version, new)
        self._allocate(rk, new, old)
        self.validator.check(rk, version, new, old=old)
        new["apiVersion"] = rk.api_version()
        if dry_run:
            preview: JSON = clone(new)
            preview["metadata"].update(
                {k: old["metadata"][k] for k in ("uid", "creationTimestamp", "resourceVersion")}
            )
            return self.serve(rk, version, preview)
        return self.serve(rk, version, self.store.update(rk, old, new))

    # --- verbs ------------------------------------------------------------------------------

    def get(self, rk: ResourceKind, version: str, namespace: str | None, name: str) -> JSON:
        with self.store.lock:
            return self.serve(rk, version, self.existing(rk, namespace, name))

    def list(
        self,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> JSON:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, group=rk.group, kind=rk.kind)
        offset = 0
        if continue_token:
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(continue_token))["offset"])
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.bad_request("invalid continue token") from exc
        with self.store.lock:
            matched = [
                obj
                for obj in self.store.iter(rk, namespace if rk.namespaced else None)
                if labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)
            ]
            rv = self.store.resource_version
            page = matched[offset : offset + limit] if limit else matched[offset:]
            items = [self.serve(rk, version, obj) for obj in page]
        meta: JSON = {"resourceVersion": rv}
        rest = len(matched) - offset - len(page)
        if limit and rest > 0:
            token = json.dumps({"offset": offset + len(page)}).encode()
            meta["continue"] = base64.urlsafe_b64encode(token).decode()
            meta["remainingItemCount"] = rest
        return {
            "kind": rk.list_kind,
            "apiVersion": rk.api_version(version),
            "metadata": meta,
            "items": items,
        }

    def create(
        self,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        keep_status: bool = False,
    ) -> JSON:
        obj = self.decode(rk, version, namespace, body)
        with self.store.lock:
            meta = obj["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{self.store.random_suffix()}"
            if rk.status_subresource and not keep_status:
                obj.pop("status", None)
            obj = self.validator.normalize(rk, version, obj)
            status = initial_status(rk.group, rk.kind)
            if status is not None and "status" not in obj:
                obj["status"] = status
            self._allocate(rk, obj, None)
            if not obj["metadata"].get("name"):
                raise errors.invalid(
                    kind=rk.kind,
                    group=rk.group,
                    name="",
                    causes=[
                        {
                            "reason": "FieldValueRequired",
                            "field": "metadata.name",
                            "message": "name or generateName is required",
                        }
                    ],
                )
            self.validator.check(rk, version, obj, old=None)
            obj["apiVersion"] = rk.api_version()
            if dry_run:
                name = obj["metadata"]["name"]
                if self.store.get(rk, obj["metadata"].get("namespace"), name) is not None:
                    raise errors.already_exists(plural=rk.plural, group=rk.group, name=name)
                return self.serve(rk, version, obj)
            return self.serve(rk, version, self.store.create(rk, obj))

    def replace(
        self,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> JSON:
        with self.store.lock:
            old = self.existing(rk, namespace, name)
            obj = self.decode(rk, version, namespace, body, name=name)
            if not rk.builtin and not obj["metadata"].get("resourceVersion"):
                raise errors.invalid(
                    kind=rk.kind,
                    group=rk.group,
                    name=name,
                    causes=[
                        {
                            "reason": "FieldValueInvalid",
                            "field": "metadata.resourceVersion",
                            "message": "Invalid value: 0x0: must be specified for an update",
                        }
                    ],
                )
            return self._write(rk, version, old, obj, subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> JSON:
        with self.store.lock:
            old = self.existing(rk, namespace, name)
            current = self.serve(rk, version, old)
            patched = self.apply_patch(
                current,
                patch,
                content_type=content_type,
                strategic_schema=builtin_schema(rk.group, version, rk.kind) if rk.builtin else None,
            )
            if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
                raise errors.bad_request("the patched object is not a Kubernetes object")
            if patched["metadata"].get("name") != name or (
                rk.namespaced and patched["metadata"].get("namespace") != namespace
            ):
                raise errors.bad_request("a patch may not change metadata.name or namespace")
            patched["kind"], patched["apiVersion"] = rk.kind, rk.api_version(version)
            return self._write(rk, version, old, patched, subresource=subresource, dry_run=dry_run)

    @staticmethod
    def apply_patch(
        current: JSON, patch: Any, *, content_type: str, strategic_schema: JSON | None
    ) -> Any:
        """`strategic_schema` is None for kinds that have no strategic merge (CRDs)."""
        if content_type == patching.MERGE_PATCH:
            if not isinstance(patch, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            return patching.merge_patch(current, patch)
        if content_type == patching.JSON_PATCH:
            return patching.json_patch(current, patch)
        if content_type == patching.STRATEGIC_MERGE_PATCH and strategic_schema is not None:
            return patching.strategic_merge_patch(current, patch, strategic_schema)
        accepted: tuple[str, ...] = (patching.JSON_PATCH, patching.MERGE_PATCH)
        if strategic_schema is not None:
            accepted += (patching.STRATEGIC_MERGE_PATCH,)
        raise errors.unsupported_media_type(content_type, accepted=accepted)

    def _write(
        self,
        rk: ResourceKind,
        version: str,
        old: JSON,
        incoming: JSON,
        *,
        subresource: str | None,
        dry_run: bool,
    ) -> JSON:
        self.check_preconditions(rk, old, incoming["metadata"])
        if subresource == "status":
            new: JSON = clone(old)
            new["apiVersion"] = rk.api_version(version)
            if incoming.get("status") is not None:
                new["status"] = incoming["status"]
            else:
                new.pop("status", None)
        else:
            new = incoming
            if rk.status_subresource:
                if "status" in old:
                    new["status"] = clone(old["status"])
                else:
                    new.pop("status", None)
        return self.commit(rk, version, old, new, dry_run=dry_run)

    def delete(
        self,
        rk: ResourceKind,
        version: str,
        namespace: str | None,
        name: str,
        options: Any,
        *,
        propagation: str | None = None,
        dry_run: bool = False,
    ) -> JSON:
        options = options if isinstance(options, dict) else {}
        with self.store.lock:
            old = self.existing(rk, namespace, name)
            old_meta = old["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old_meta["uid"]:
                raise errors.conflict(
                    plural=rk.plural,
                    group=rk.group,
                    name=name,
                    why=f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {old_meta['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != old_meta["resourceVersion"]:
                raise errors.conflict(
                    plural=rk.plural,
                    group=rk.group,
                    name=name,
                    why=f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{old_meta['resourceVersion']}",
                )
            policy = propagation or options.get("propagationPolicy")
            if policy is None:
                policy = "Orphan" if options.get("orphanDependents") else "Background"
            if policy not in ("Orphan", "Background", "Foreground"):
                raise errors.bad_request(f"unknown propagationPolicy {policy!r}")
            served = self.serve(rk, version, old)
            if not dry_run:
                if policy == "Orphan":
                    self._orphan(old_meta["uid"])
                self.store.delete(rk, old, cascade=policy != "Orphan")
        if rk.delete_returns_object:
            return served
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": rk.group, "kind": rk.plural, "uid": old_meta["uid"]},
        }

    def _orphan(self, uid: str) -> None:
        for dependent in self.store.dependents(uid):
            found = self.store.registry.by_kind(dependent["apiVersion"], dependent["kind"])
            if found is None:
                continue
            new = clone(dependent)
            refs = [r for r in new["metadata"].get("ownerReferences") or [] if r["uid"] != uid]
            new["metadata"]["ownerReferences"] = refs
            if not refs:
                del new["metadata"]["ownerReferences"]
            self.store.update(found[0], dependent, new)
