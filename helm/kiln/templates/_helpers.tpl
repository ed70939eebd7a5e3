{{/* The release's resource name: <release>-kiln, or the release name when it says kiln. */}}
{{- define "kiln.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kiln.labels" -}}
{{ include "kiln.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kiln.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The model repository volume, from modelRepository.type. */}}
{{- define "kiln.modelVolume" -}}
{{- $r := .Values.modelRepository -}}
- name: models
{{- if eq $r.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required "modelRepository.pvc.claimName is required with type pvc" $r.pvc.claimName }}
    readOnly: true
{{- else if eq $r.type "configMap" }}
  configMap:
    name: {{ required "modelRepository.configMap.name is required with type configMap" $r.configMap.name }}
    {{- with $r.configMap.items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- else if eq $r.type "initContainer" }}
  emptyDir: {}
{{- else if ne $r.type "image" }}
{{- fail (printf "modelRepository.type must be image, pvc, configMap or initContainer (got %q)" $r.type) }}
{{- end }}
{{- end -}}
