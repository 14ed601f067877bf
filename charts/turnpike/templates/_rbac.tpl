{{/*
The operator's permissions: exactly the API calls it makes (operator/kube.py RESOURCES, plus the
calls its keyring rotation makes; tests/charts/test_rbac.py keeps this equal to both).
Cluster-scoped permissions, whatever namespaces it watches:
*/}}
{{- define "turnpike.rbac.clusterRules" -}}
# node addresses: edge address discovery and the relays' peer deny list
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
# kopf scans namespaces and discovers its resources through the CRDs
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/*
Namespaced permissions: in the ClusterRole when the operator watches every namespace, in a Role
per watched namespace otherwise.
*/}}
{{- define "turnpike.rbac.namespacedRules" -}}
# its own resources: reconciled, kopf's progress annotations, an old version's finalizer removed, and status
- apiGroups: ["turnpike.io"]
  resources: ["relayedges", "streamgateways"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["turnpike.io"]
  resources: ["relayedges/status", "streamgateways/status"]
  verbs: ["get", "patch", "update"]
# what an edge or a gateway becomes: workloads, Services, PodDisruptionBudgets, and the
# ConfigMaps it publishes (turnpike-ip-ranges, turnpike-edges, component config)
- apiGroups: ["apps"]
  resources: ["deployments", "daemonsets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# the keyring Secret it owns and rotates (never deleted)
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
# which nodes run an edge's pods, and which pods must load a new key before it signs
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/*
kopf's peering object (the operator creates it): cluster-wide or in each watched namespace.
*/}}
{{- define "turnpike.rbac.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ . | quote }}]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end -}}

{{/*
Namespaces that get a Role when the operator watches a list of namespaces: those, plus the
release namespace. A YAML list.
*/}}
{{- define "turnpike.roleNamespaces" -}}
{{- $namespaces := append .Values.operator.watchNamespaces (include "turnpike.namespace" .) | uniq -}}
{{- toYaml $namespaces -}}
{{- end -}}
