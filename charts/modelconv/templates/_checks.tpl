{{/*
Checks of values that values.schema.json cannot express. Each one fails the render with a
message that names the value and the fix, before anything reaches the cluster.
*/}}

{{/*
Reject extraEnv entries whose name the chart sets already (modelconv.operatorEnv) or that
another extraEnv entry has. Helm applies the Deployment server-side, and the API server
rejects a container env with two entries of one name ("duplicate entries for key"), which
leaves a failed release.
*/}}
{{- define "modelconv.checkExtraEnv" -}}
{{- $sources := dict
  "POD_NAME" "from the pod's metadata.name, which the operator reads. Remove the extraEnv entry."
  "POD_NAMESPACE" "from the pod's metadata.namespace, which the operator reads. Remove the extraEnv entry."
  "AWS_REGION" "from store.region. Set store.region instead and remove the extraEnv entry."
  "AWS_EC2_METADATA_DISABLED" "to \"true\" because store.credentialsSecret is set. Remove the extraEnv entry."
-}}
{{- $owners := dict -}}
{{- range (include "modelconv.operatorEnv" . | fromYamlArray) -}}
{{- $_ := set $owners .name "chart" -}}
{{- end -}}
{{- range $index, $entry := .Values.extraEnv -}}
{{- $owner := get $owners $entry.name -}}
{{- if eq $owner "chart" -}}
{{- $source := get $sources $entry.name | default "already. Remove the extraEnv entry." -}}
{{- fail (printf "extraEnv[%d]: the chart sets %s %s" $index $entry.name $source) -}}
{{- else if $owner -}}
{{- fail (printf "extraEnv[%d]: %s is also the name of %s. Keep one of the two entries." $index $entry.name $owner) -}}
{{- end -}}
{{- $_ := set $owners $entry.name (printf "extraEnv[%d]" $index) -}}
{{- end -}}
{{- end -}}

{{/*
Reject stages.env names that the operator sets on stage or training containers itself
(modelconv.controller.jobs). The API server accepts such a Job with a warning, and the
container sees only the operator's entry, which comes later, so the value would be ignored.
*/}}
{{- define "modelconv.checkStageEnv" -}}
{{- $endpoint := "on stage Jobs from store.endpoint, the endpoint that the operator reads the store at too. Set store.endpoint instead and remove the stages.env key." -}}
{{- $ignored := "so this value would be ignored. Remove the stages.env key." -}}
{{- $operatorSets := dict
  "MODELCONV_S3_ENDPOINT" $endpoint
  "AWS_ENDPOINT_URL_S3" $endpoint
  "MODELCONV_TERMINATION_LOG" (printf "on stage Jobs to the file that the stage writes its JSON summary to, %s" $ignored)
  "MODELCONV_TRAIN_OUTPUT" (printf "on training Jobs from spec.train.output of each ModelConversion, %s" $ignored)
  "MODELCONV_TRAIN_OUTPUT_KIND" (printf "on training Jobs from spec.train.outputKind of each ModelConversion, %s" $ignored)
-}}
{{- range $name, $value := .Values.stages.env -}}
{{- with get $operatorSets $name -}}
{{- fail (printf "stages.env.%s: the operator sets %s %s" $name $name .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
