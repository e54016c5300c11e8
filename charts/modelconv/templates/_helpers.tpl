{{/* Names, labels and values shared by the chart's templates. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "modelconv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of resource names: fullnameOverride, or "<release>-<chart>" unless the release
name already contains the chart name. Names stay within the 63 characters of a label. */}}
{{- define "modelconv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "modelconv.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object of the release carries. */}}
{{- define "modelconv.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "modelconv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelconv
{{- end -}}

{{/* Labels that select the operator's pods; they never change across upgrades. */}}
{{- define "modelconv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelconv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "modelconv.serviceAccountName" -}}
{{- default (include "modelconv.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Namespace of the macOS runner pool. */}}
{{- define "modelconv.runnerNamespace" -}}
{{- default .Release.Namespace .Values.runners.namespace -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: the digest wins over the tag, and
the tag defaults to the chart's appVersion. Call with (dict "image" ... "context" $). */}}
{{- define "modelconv.imageReference" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .context.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The helm.sh/resource-policy annotation that keeps CRDs after uninstall. */}}
{{- define "modelconv.crdAnnotations" -}}
{{- if .Values.crds.keep }}
helm.sh/resource-policy: keep
{{- end }}
{{- end -}}

{{/* Environment variables that the chart sets on the operator container, before extraEnv. */}}
{{- define "modelconv.operatorEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.store.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.store.credentialsSecret }}
# Credentials come from the Secret, so the AWS SDK never needs the instance metadata service.
- name: AWS_EC2_METADATA_DISABLED
  value: "true"
{{- end }}
{{- end -}}

{{/* Arguments of `modelconv operator` (modelconv operator --help describes each). */}}
{{- define "modelconv.operatorArgs" -}}
{{- $election := .Values.leaderElection -}}
{{- if not (and (lt (int $election.retryPeriodSeconds) (int $election.renewDeadlineSeconds)) (lt (int $election.renewDeadlineSeconds) (int $election.leaseDurationSeconds))) -}}
{{- fail (printf "leaderElection: expected retryPeriodSeconds (%v) < renewDeadlineSeconds (%v) < leaseDurationSeconds (%v)" $election.retryPeriodSeconds $election.renewDeadlineSeconds $election.leaseDurationSeconds) -}}
{{- end -}}
- operator
{{- range .Values.watch.namespaces }}
- {{ printf "--namespace=%s" . | quote }}
{{- end }}
- --lease-name={{ include "modelconv.fullname" . }}
- --lease-namespace={{ .Release.Namespace }}
- --pool-namespace={{ include "modelconv.runnerNamespace" . }}
- --lease-duration={{ $election.leaseDurationSeconds }}
- --renew-deadline={{ $election.renewDeadlineSeconds }}
- --retry-period={{ $election.retryPeriodSeconds }}
- {{ printf "--stage-image=%s" (include "modelconv.imageReference" (dict "image" .Values.stages.image "context" .)) | quote }}
{{- with .Values.store.uri }}
- {{ printf "--store=%s" . | quote }}
{{- end }}
{{- with .Values.store.credentialsSecret }}
- {{ printf "--store-secret=%s" . | quote }}
{{- end }}
{{- with .Values.store.endpoint }}
- {{ printf "--s3-endpoint=%s" . | quote }}
{{- end }}
{{- with .Values.runners.presignEndpoint }}
- {{ printf "--presign-endpoint=%s" . | quote }}
{{- end }}
{{- if .Values.watch.namespaces }}
- {{ printf "--stage-service-account=%s" .Values.stages.serviceAccount.name | quote }}
{{- end }}
{{- range $name, $value := .Values.stages.env }}
- {{ printf "--stage-env=%s=%s" $name $value | quote }}
{{- end }}
- --backoff-limit={{ .Values.stages.backoffLimit }}
- --active-deadline={{ .Values.stages.activeDeadlineSeconds }}
- --train-deadline={{ .Values.stages.trainActiveDeadlineSeconds }}
- --ttl-after-finished={{ .Values.stages.ttlSecondsAfterFinished }}
- --image-pull-grace={{ .Values.stages.imagePullGraceSeconds }}
- --recheck-interval={{ .Values.recheckIntervalSeconds }}
- --device-poll-interval={{ .Values.devicePollIntervalSeconds }}
- --metrics-port={{ ternary .Values.metrics.port 0 .Values.metrics.enabled }}
- {{ printf "--metrics-address=%s" .Values.metrics.address | quote }}
- --health-port={{ .Values.health.port }}
- {{ printf "--health-address=%s" .Values.health.address | quote }}
- --log-format={{ .Values.logging.format }}
- --log-level={{ .Values.logging.level }}
{{- end -}}

{{/*
Milliseconds of a Prometheus duration as values.schema.json allows it: a number and one of
ms, s, m, h.
*/}}
{{- define "modelconv.durationMs" -}}
{{- if hasSuffix "ms" . -}}
{{- trimSuffix "ms" . | int64 -}}
{{- else if hasSuffix "s" . -}}
{{- mul (trimSuffix "s" . | int64) 1000 -}}
{{- else if hasSuffix "m" . -}}
{{- mul (trimSuffix "m" . | int64) 60000 -}}
{{- else -}}
{{- mul (trimSuffix "h" . | int64) 3600000 -}}
{{- end -}}
{{- end -}}
