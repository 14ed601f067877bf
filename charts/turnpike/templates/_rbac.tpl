{{/*
Cluster-scoped permissions of the operator, whatever namespaces it watches.
*/}}
{{- define "turnpike.rbac.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/*
Namespaced permissions of the operator: in a ClusterRole when it watches every namespace, in a Role
per namespace otherwise.
*/}}
{{- define "turnpike.rbac.namespacedRules" -}}
- apiGroups: ["turnpike.io"]
  resources: ["relayedges", "streamgateways"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["turnpike.io"]
  resources: ["relayedges/status", "streamgateways/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "daemonsets"]
  verbs: ["create", "get", "list", "watch", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets"]
  verbs: ["create", "get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "get", "list", "watch", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/*
Namespaces that get a Role when the operator watches a list of namespaces: those, plus the
release namespace. A YAML list.
*/}}
{{- define "turnpike.roleNamespaces" -}}
{{- $namespaces := append .Values.operator.watchNamespaces (include "turnpike.namespace" .) | uniq -}}
{{- toYaml $namespaces -}}
{{- end -}}
