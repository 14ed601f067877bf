{{/*
Names. Kubernetes object names are DNS labels (63 characters at most); component names append
a suffix of up to 17 characters ("-operator-metrics"), so the base name is cut to 46.
*/}}
{{- define "turnpike.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnpike.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "turnpike.operator.fullname" -}}
{{- printf "%s-operator" (include "turnpike.fullname" .) -}}
{{- end -}}

{{- define "turnpike.tokens.fullname" -}}
{{- printf "%s-tokens" (include "turnpike.fullname" .) -}}
{{- end -}}

{{- define "turnpike.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "turnpike.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnpike.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "turnpike.operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Labels. "turnpike.labels" goes on every object; "turnpike.selectorLabels" is the immutable part a
Deployment selects on. Both take a dict: (dict "ctx" $ "component" "operator").
*/}}
{{- define "turnpike.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnpike.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "turnpike.labels" -}}
{{ include "turnpike.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: turnpike
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "turnpike.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The image reference: repository, then @digest when a digest is set, else :tag (appVersion by default).
*/}}
{{- define "turnpike.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Preferred anti-affinity over nodes for a component, used when the user sets no affinity.
*/}}
{{- define "turnpike.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "turnpike.selectorLabels" . | nindent 12 }}
{{- end -}}

{{/*
Log flags shared by both components; takes the component's values.
*/}}
{{- define "turnpike.logArgs" -}}
- --log-level={{ .logLevel }}
{{- if .logJson }}
- --log-json
{{- end }}
{{- end -}}

{{/*
Whether custom resources of turnpike.io may be rendered: the API must already be served (CRDs
installed by an earlier release revision or by other means), or the chart must not manage the
CRDs (then the user promises they exist). Returns "true" or "".
*/}}
{{- define "turnpike.customResourcesReady" -}}
{{- if or (not .Values.crds.enabled) (.Capabilities.APIVersions.Has "turnpike.io/v1alpha1") -}}
true
{{- end -}}
{{- end -}}

{{/*
Contradictory values fail the render with a message that says what to change.
*/}}
{{- define "turnpike.validate" -}}
{{- if and .Values.operator.podDisruptionBudget.enabled (gt (int .Values.operator.replicas) 1) (ge (int .Values.operator.podDisruptionBudget.minAvailable) (int .Values.operator.replicas)) -}}
{{- fail (printf "operator.podDisruptionBudget.minAvailable (%d) must be less than operator.replicas (%d), or no node could ever be drained" (int .Values.operator.podDisruptionBudget.minAvailable) (int .Values.operator.replicas)) -}}
{{- end -}}
{{- if and .Values.tokens.enabled .Values.tokens.podDisruptionBudget.enabled (gt (int .Values.tokens.replicas) 1) (ge (int .Values.tokens.podDisruptionBudget.minAvailable) (int .Values.tokens.replicas)) -}}
{{- fail (printf "tokens.podDisruptionBudget.minAvailable (%d) must be less than tokens.replicas (%d), or no node could ever be drained" (int .Values.tokens.podDisruptionBudget.minAvailable) (int .Values.tokens.replicas)) -}}
{{- end -}}
{{- if lt (int .Values.keyring.rotationIntervalSeconds) (int .Values.keyring.relayWaitTimeoutSeconds) -}}
{{- fail (printf "keyring.rotationIntervalSeconds (%d) must be at least keyring.relayWaitTimeoutSeconds (%d): a rotation could not finish before the next one starts" (int .Values.keyring.rotationIntervalSeconds) (int .Values.keyring.relayWaitTimeoutSeconds)) -}}
{{- end -}}
{{- end -}}
