{{/*
Helpers. Every name is prefixed with the chart name (falco-triage.) so that a parent chart's
helpers can never collide with ours.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "falco-triage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name, plus the chart name
unless the release name already contains it. Truncated so that suffixes like "-receiver-token"
still fit in 63 characters.
*/}}
{{- define "falco-triage.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* name-version, as the helm.sh/chart label wants it. */}}
{{- define "falco-triage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "falco-triage.labels" -}}
helm.sh/chart: {{ include "falco-triage.chart" . }}
{{ include "falco-triage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: falco-triage
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select this release's pods (never change them: selectors are immutable). */}}
{{- define "falco-triage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "falco-triage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Object names. */}}
{{- define "falco-triage.operatorName" -}}
{{- printf "%s-operator" (include "falco-triage.fullname" .) }}
{{- end }}

{{- define "falco-triage.receiverName" -}}
{{- printf "%s-receiver" (include "falco-triage.fullname" .) }}
{{- end }}

{{- define "falco-triage.configName" -}}
{{- printf "%s-config" (include "falco-triage.fullname" .) }}
{{- end }}

{{- define "falco-triage.operatorServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "falco-triage.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "falco-triage.receiverServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "falco-triage.receiverName" .) .Values.serviceAccount.receiverName }}
{{- else }}
{{- default "default" .Values.serviceAccount.receiverName }}
{{- end }}
{{- end }}

{{/* The Secret with the receiver's bearer token (key "token"), ours or the user's. */}}
{{- define "falco-triage.receiverTokenSecretName" -}}
{{- default (printf "%s-receiver-token" (include "falco-triage.fullname" .)) .Values.receiver.auth.existingSecret }}
{{- end }}

{{/* The Secret with the LLM API key, ours or the user's. */}}
{{- define "falco-triage.llmSecretName" -}}
{{- default (printf "%s-llm" (include "falco-triage.fullname" .)) .Values.llm.existingSecret }}
{{- end }}

{{/* The key of the LLM API key in that Secret. */}}
{{- define "falco-triage.llmSecretKey" -}}
{{- ternary .Values.llm.existingSecretKey "apiKey" (not (empty .Values.llm.existingSecret)) }}
{{- end }}

{{/* The receiver's Service DNS name. */}}
{{- define "falco-triage.receiverHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "falco-triage.receiverName" .) .Release.Namespace }}
{{- end }}

{{/* The URL Falco and Falcosidekick post to (the receiver's POST /v1/events). */}}
{{- define "falco-triage.receiverURL" -}}
{{- printf "%s://%s:%d/v1/events" (ternary "https" "http" .Values.receiver.tls.enabled) (include "falco-triage.receiverHost" .) (int .Values.receiver.service.port) }}
{{- end }}

{{/* The kopf peering object's name (--peering-name). */}}
{{- define "falco-triage.peeringName" -}}
{{- default (include "falco-triage.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/* repository:tag, or repository@digest. */}}
{{- define "falco-triage.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the pods find things. Secrets live outside the read-only config directory. */}}
{{- define "falco-triage.configDir" -}}/etc/falco-triage{{- end }}
{{- define "falco-triage.tokenDir" -}}/var/run/secrets/falco-triage/token{{- end }}
{{- define "falco-triage.tlsDir" -}}/var/run/secrets/falco-triage/tls{{- end }}
{{- define "falco-triage.llmDir" -}}/var/run/secrets/falco-triage/llm{{- end }}

{{/*
The settings file (FALCO_TRIAGE_CONFIG), in the settings model's own snake_case. Settings that
belong to one component's mounts (token and TLS files) are environment variables of that
component instead, so the other component never names them.
*/}}
{{- define "falco-triage.settings" -}}
{{- $settings := dict
  "namespace" .Release.Namespace
  "log_level" .Values.logLevel
  "ingest" (dict
    "port" (int .Values.receiver.port)
    "auth_disabled" .Values.receiver.auth.disabled
    "max_body_bytes" (int .Values.receiver.limits.maxBodyBytes)
    "max_events_per_request" (int .Values.receiver.limits.maxEventsPerRequest)
    "max_output_chars" (int .Values.receiver.limits.maxOutputChars)
    "max_field_chars" (int .Values.receiver.limits.maxFieldChars)
    "max_json_depth" (int .Values.receiver.limits.maxJsonDepth)
    "header_timeout_seconds" (float64 .Values.receiver.limits.headerTimeoutSeconds)
    "body_timeout_seconds" (float64 .Values.receiver.limits.bodyTimeoutSeconds)
    "queue_capacity" (int .Values.receiver.writes.queueCapacity)
    "write_qps" (float64 .Values.receiver.writes.qps)
    "write_burst" (int .Values.receiver.writes.burst)
    "write_workers" (int .Values.receiver.writes.workers)
    "aggregation_window_seconds" (int .Values.receiver.aggregationWindowSeconds)
    "shutdown_flush_seconds" (float64 .Values.receiver.shutdownFlushSeconds)
  )
  "operator" (dict
    "peering_lifetime_seconds" (int .Values.operator.peering.lifetimeSeconds)
    "max_concurrent_alerts" (int .Values.operator.maxConcurrentAlerts)
    "retention" (dict
      "max_age" .Values.operator.retention.maxAge
      "max_per_namespace" (int .Values.operator.retention.maxPerNamespace)
      "sweep_interval_seconds" (int .Values.operator.retention.sweepIntervalSeconds)
    )
    "protected_namespaces" .Values.operator.protectedNamespaces
    "opt_out_label" .Values.operator.optOutLabel
    "production_label" .Values.operator.productionLabel
  )
}}
{{- if or .Values.llm.enabled .Values.llm.settings }}
{{- $llm := deepCopy .Values.llm.settings }}
{{- if .Values.llm.enabled }}
{{- $_ := set $llm "enabled" true }}
{{- end }}
{{- $_ := set $settings "llm" $llm }}
{{- end }}
{{- $settings = mergeOverwrite $settings (deepCopy .Values.extraConfig) }}
{{- toYaml $settings }}
{{- end }}

{{/* Environment shared by both components. */}}
{{- define "falco-triage.commonEnv" -}}
- name: FALCO_TRIAGE_CONFIG
  value: {{ include "falco-triage.configDir" . }}/config.yaml
# NB: the image sets these too; repeated so that a custom image cannot write bytecode into a
# read-only root filesystem or buffer logs.
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
{{- end }}

{{/* The pods' shared volumes: the settings file and a writable /tmp. */}}
{{- define "falco-triage.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "falco-triage.configName" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "falco-triage.commonVolumeMounts" -}}
- name: config
  mountPath: {{ include "falco-triage.configDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}
