{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.fullname" -}}
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

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The controller's flags; tests/chart.rs parses them with the controller's own flag parser. */}}
{{- define "sluice.args" -}}
- controller
{{- with .Values.watchNamespace }}
- --namespace={{ . }}
{{- end }}
{{- with .Values.controller.instanceID }}
- --instance-id={{ . }}
{{- end }}
- --leader-elect={{ .Values.controller.leaderElection.enabled }}
- --lease-duration-seconds={{ .Values.controller.leaderElection.leaseDurationSeconds }}
- --admin-address=0.0.0.0:{{ .Values.controller.adminPort }}
- --log-format={{ .Values.controller.logFormat }}
- --log-level={{ .Values.controller.logLevel }}
- --qps={{ .Values.controller.qps }}
- --burst={{ .Values.controller.burst }}
- --rollout-workers={{ .Values.controller.rolloutWorkers }}
- --analysis-workers={{ .Values.controller.analysisWorkers }}
- --istio-api-version={{ .Values.controller.istioAPIVersion }}
{{- range .Values.controller.metricAddressAllowlist }}
- --metric-address-allow={{ . }}
{{- end }}
{{- with .Values.controller.defaultPrometheusAddress }}
- --default-prometheus-address={{ . }}
{{- end }}
- --notifications={{ .Values.notifications.enabled }}
{{- range .Values.notifications.urlAllowlist }}
- --notification-url-allow={{ . }}
{{- end }}
{{- range .Values.controller.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
