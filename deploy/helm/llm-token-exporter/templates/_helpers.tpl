{{/* Chart name, truncated to a DNS label. */}}
{{- define "llm-token-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "llm-token-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A name derived from the full name with a suffix, kept within 63 characters. */}}
{{- define "llm-token-exporter.suffixed" -}}
{{- $suffix := index . 1 }}
{{- $base := include "llm-token-exporter.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "llm-token-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the exporter's pods. */}}
{{- define "llm-token-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-token-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "llm-token-exporter.labels" -}}
helm.sh/chart: {{ include "llm-token-exporter.chart" . }}
{{ include "llm-token-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-token-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "llm-token-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-token-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llm-token-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The label selector string of the vLLM pods (k=v,k=v; keys sorted). */}}
{{- define "llm-token-exporter.vllmSelector" -}}
{{- $pairs := list }}
{{- range $key, $value := .Values.vllmPods.matchLabels }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Where the pod-resources directory is mounted in the container (the setting's default path). */}}
{{- define "llm-token-exporter.podResourcesMount" -}}
/var/lib/kubelet/pod-resources
{{- end }}

{{- define "llm-token-exporter.listen" -}}
{{- $host := index . 0 }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int (index . 1)) }}
{{- else }}
{{- printf "%s:%d" $host (int (index . 1)) }}
{{- end }}
{{- end }}

{{/* The exporter's YAML config file: the config values plus what the chart owns. */}}
{{- define "llm-token-exporter.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "web_listen_address" (include "llm-token-exporter.listen" (list .Values.listenHost .Values.ports.metrics)) }}
{{- $_ = set $cfg "otlp_grpc_listen_address" (include "llm-token-exporter.listen" (list .Values.listenHost .Values.ports.otlpGrpc)) }}
{{- $_ = set $cfg "otlp_http_listen_address" (include "llm-token-exporter.listen" (list .Values.listenHost .Values.ports.otlpHttp)) }}
{{- if not (hasKey $cfg "slo_latency_thresholds") }}
{{- /* The SLO thresholds of the rules this chart ships: every one must be a bucket edge of the exporter. */}}
{{- $generated := .Files.Get "files/exporter-settings.yaml" | fromYaml }}
{{- $_ = set $cfg "slo_latency_thresholds" (get $generated "slo_latency_thresholds") }}
{{- end }}
{{- if not (hasKey $cfg "kubernetes_pod_selector") }}
{{- $_ = set $cfg "kubernetes_pod_selector" (include "llm-token-exporter.vllmSelector" .) }}
{{- end }}
{{- if .Values.podResources.enabled }}
{{- $_ = set $cfg "podresources_socket" (printf "%s/kubelet.sock" (include "llm-token-exporter.podResourcesMount" .)) }}
{{- else }}
{{- $_ = set $cfg "podresources_socket" "" }}
{{- end }}
{{- range $group := list "web" "otlp" }}
{{- if and (index $.Values.tls.clientAuth $group) (not (and $.Values.tls.secretName (index $.Values.tls $group))) }}
{{- fail (printf "tls.clientAuth.%s needs TLS on that listener: set tls.secretName and tls.%s" $group $group) }}
{{- end }}
{{- end }}
{{- with .Values.tls }}
{{- if .secretName }}
{{- $dir := include "llm-token-exporter.tlsMount" $ }}
{{- range $group := list "web" "otlp" }}
{{- if index $.Values.tls $group }}
{{- $_ = set $cfg (printf "%s_tls_cert_file" $group) (printf "%s/tls.crt" $dir) }}
{{- $_ = set $cfg (printf "%s_tls_key_file" $group) (printf "%s/tls.key" $dir) }}
{{- if index $.Values.tls.clientAuth $group }}
{{- $_ = set $cfg (printf "%s_tls_client_ca_file" $group) (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Where the TLS Secret is mounted (not under /etc/llm-token-exporter: that is the ConfigMap's volume). */}}
{{- define "llm-token-exporter.tlsMount" -}}
/etc/llm-token-exporter-tls
{{- end }}

{{/* Whether /metrics is served over HTTPS, and whether it also wants client certificates. */}}
{{- define "llm-token-exporter.webTls" -}}
{{- if and .Values.tls.secretName .Values.tls.web }}true{{ end }}
{{- end }}
{{- define "llm-token-exporter.webMtls" -}}
{{- if and (include "llm-token-exporter.webTls" .) .Values.tls.clientAuth.web }}true{{ end }}
{{- end }}
