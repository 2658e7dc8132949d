{{/* Names, labels and the few shared decisions of the trove chart. */}}

{{- define "trove.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release alone when it already holds the chart name (63 chars max). */}}
{{- define "trove.fullname" -}}
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

{{- define "trove.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trove.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trove.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trove.labels" -}}
helm.sh/chart: {{ include "trove.chart" . }}
{{ include "trove.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Per-component names (the component label keeps the selectors of api, operator, minio apart). */}}
{{- define "trove.api.fullname" -}}
{{- printf "%s-api" (include "trove.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trove.operator.fullname" -}}
{{- printf "%s-operator" (include "trove.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trove.minio.fullname" -}}
{{- printf "%s-minio" (include "trove.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trove.api.serviceAccountName" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (include "trove.api.fullname" .) .Values.api.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trove.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "trove.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespace of sandbox pods, their PVCs and NetworkPolicies, TroveNamespaces and the warm pool:
not the release's, so the Roles granting pods/exec and pod create/delete there reach no API,
operator or MinIO pod and none of their Secrets.
*/}}
{{- define "trove.sandbox.namespace" -}}
{{- default (printf "%s-sandboxes" .Release.Name | trunc 63 | trimSuffix "-") .Values.sandbox.namespace.name }}
{{- end }}

{{/* Ranges sandbox `internet` egress never reaches (the operator adds 169.254.0.0/16 and loopback). */}}
{{- define "trove.egressBlocked" -}}
{{- concat .Values.cluster.podCidrs .Values.cluster.serviceCidrs .Values.cluster.nodeCidrs .Values.sandbox.egressBlocked | uniq | join "," }}
{{- end }}

{{/* NetworkPolicy peers: pods of any namespace but the sandboxes', and addresses outside the pod ranges. */}}
{{- define "trove.networkPolicy.notSandboxes" -}}
- namespaceSelector:
    matchExpressions:
      - key: trove.dev/sandboxes
        operator: DoesNotExist
- ipBlock:
    cidr: 0.0.0.0/0
    {{- with (include "trove.podCidrs" (dict "family" 4 "cidrs" .Values.cluster.podCidrs)) }}
    except: {{ . }}
    {{- end }}
- ipBlock:
    cidr: ::/0
    {{- with (include "trove.podCidrs" (dict "family" 6 "cidrs" .Values.cluster.podCidrs)) }}
    except: {{ . }}
    {{- end }}
{{- end }}

{{/* The ranges of one address family (4: dotted, 6: with colons), as a flow list; empty if none. */}}
{{- define "trove.podCidrs" -}}
{{- $found := list }}
{{- range .cidrs }}
{{- if eq (contains ":" .) (eq (int $.family) 6) }}{{ $found = append $found . }}{{ end }}
{{- end }}
{{- if $found }}{{ toJson $found }}{{ end }}
{{- end }}

{{- define "trove.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "trove.postgresql.image" -}}
{{- printf "%s:%s" .Values.postgresql.image.repository (default .Chart.AppVersion .Values.postgresql.image.tag) }}
{{- end }}

{{/* The API's database is PostgreSQL (the chart's or an external one), not SQLite on a PVC. */}}
{{- define "trove.database.sql" -}}
{{- if or .Values.database.external.enabled .Values.postgresql.enabled }}true{{ end }}
{{- end }}

{{/* The PostgreSQL Service's env var prefix (as the MinIO one: no DNS needed). */}}
{{- define "trove.postgresql.envPrefix" -}}
{{- printf "%s-postgresql" (include "trove.fullname" .) | upper | replace "-" "_" }}
{{- end }}

{{/* Cluster-scoped, so the release namespace is in the name (two releases may share a name). */}}
{{- define "trove.warmPool.priorityClass" -}}
{{- printf "%s-%s-warm-pool" .Release.Namespace (include "trove.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trove.sandbox.image" -}}
{{- printf "%s:%s" .Values.sandbox.image.repository (default .Chart.AppVersion .Values.sandbox.image.tag) }}
{{- end }}

{{/* The admin key Secret: the user's, or ours (generated once, see api/secret-admin.yaml). */}}
{{- define "trove.adminKey.secretName" -}}
{{- default (printf "%s-admin-key" (include "trove.fullname" .)) .Values.api.adminKey.existingSecret }}
{{- end }}

{{- define "trove.adminKey.secretKey" -}}
{{- if .Values.api.adminKey.existingSecret }}{{ .Values.api.adminKey.existingSecretKey }}{{ else }}admin-key{{ end }}
{{- end }}

{{- define "trove.database.secretName" -}}
{{- default (printf "%s-database" (include "trove.fullname" .)) .Values.database.external.existingSecret }}
{{- end }}

{{- define "trove.database.secretKey" -}}
{{- if .Values.database.external.existingSecret }}{{ .Values.database.external.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}

{{/* S3 credentials: `snapshots.s3.existingSecret` when set, else the chart's `<fullname>-s3`. */}}
{{- define "trove.s3.secretName" -}}
{{- default (printf "%s-s3" (include "trove.fullname" .)) .Values.snapshots.s3.existingSecret }}
{{- end }}

{{- define "trove.s3.createSecret" -}}
{{- if and (eq .Values.snapshots.store "s3") (not .Values.snapshots.s3.existingSecret) (or .Values.minio.enabled .Values.snapshots.s3.accessKeyId) }}true{{ end }}
{{- end }}

{{/*
The MinIO Service's env var prefix: pods started after a Service get <NAME>_SERVICE_HOST/_PORT,
which work without cluster DNS (Helm creates Services before Deployments).
*/}}
{{- define "trove.minio.envPrefix" -}}
{{- include "trove.minio.fullname" . | upper | replace "-" "_" }}
{{- end }}

{{/* Refuse value combinations the schema cannot express, with a message saying what to set. */}}
{{- define "trove.validate" -}}
{{- if and (gt (int .Values.api.replicas) 1) (not (include "trove.database.sql" .)) }}
{{- fail (printf "api.replicas=%d needs PostgreSQL: SQLite on a ReadWriteOnce PVC serves one replica only. Set postgresql.enabled=true (the chart's), or database.external.enabled=true with database.external.url or database.external.existingSecret, or api.replicas=1." (int .Values.api.replicas)) }}
{{- end }}
{{- if and .Values.postgresql.enabled .Values.database.external.enabled }}
{{- fail "postgresql.enabled=true and database.external.enabled=true: pick one (set postgresql.enabled=false to use the external database)" }}
{{- end }}
{{- if and .Values.database.external.enabled (not .Values.database.external.url) (not .Values.database.external.existingSecret) }}
{{- fail "database.external.enabled=true needs database.external.url or database.external.existingSecret" }}
{{- end }}
{{- if and (gt (int .Values.api.replicas) 1) (eq .Values.snapshots.store "directory") }}
{{- fail "api.replicas > 1 needs snapshots.store=s3: the directory store lives on one replica's volume" }}
{{- end }}
{{- if eq .Values.snapshots.store "s3" }}
{{- if and (not .Values.minio.enabled) (not .Values.snapshots.s3.endpoint) }}
{{- fail "snapshots.store=s3 with minio.enabled=false needs snapshots.s3.endpoint (an IP works, e.g. http://10.0.0.9:8333), or set snapshots.store=directory" }}
{{- end }}
{{- if and (not .Values.minio.enabled) (not .Values.snapshots.s3.existingSecret) (not (and .Values.snapshots.s3.accessKeyId .Values.snapshots.s3.secretAccessKey)) }}
{{- fail "an external S3 endpoint needs snapshots.s3.existingSecret, or snapshots.s3.accessKeyId and snapshots.s3.secretAccessKey" }}
{{- end }}
{{- else if .Values.minio.enabled }}
{{- fail "minio.enabled=true but snapshots.store=directory: set minio.enabled=false, or snapshots.store=s3" }}
{{- end }}
{{- if and .Values.api.ingress.tls.enabled (not .Values.api.ingress.host) }}
{{- fail "api.ingress.tls.enabled=true needs api.ingress.host" }}
{{- end }}
{{- if and (gt (int .Values.operator.replicas) 1) (not (.Capabilities.APIVersions.Has "kopf.dev/v1")) }}
{{- fail "operator.replicas > 1 elects one active operator through kopf peering: apply the kopf peering CRDs first (kubectl apply -f crds/kopf-peering.yaml from the Trove repository), or keep operator.replicas=1" }}
{{- end }}
{{- if eq (include "trove.sandbox.namespace" .) .Release.Namespace }}
{{- fail (printf "sandbox.namespace.name=%s is the release namespace: sandboxes need a namespace of their own, so that the API's pods/exec and the operator's pod rights reach no other pod or Secret" .Release.Namespace) }}
{{- end }}
{{- if and .Values.operator.metrics.enabled (eq (int .Values.operator.metrics.port) 8080) }}
{{- fail "operator.metrics.port=8080 is the operator's health port: pick another (default 9090)" }}
{{- end }}
{{- end }}
