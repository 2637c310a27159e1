{{/*
Names. With the default release name "anyk" the fullname is "anyk" and every object of the
operator (Deployment, ServiceAccount, ClusterRole, Service, ...) is "<fullname>-operator", i.e.
"anyk-operator". The fullname is:
  - .Values.fullnameOverride when set;
  - else the release name when it contains the chart name (or .Values.nameOverride);
  - else "<release>-<chart name>".
Names are cut to 63 characters (DNS label limit) less the longest suffix used ("-operator-nodes").
*/}}

{{- define "anyk.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-operator": the Deployment, ServiceAccount, (Cluster)Role(Binding)s, Service. */}}
{{- define "anyk.operatorName" -}}
{{- printf "%s-operator" (include "anyk.fullname" .) }}
{{- end }}

{{/* "<fullname>-operator-nodes": the read-only ClusterRole(Binding) for nodes. */}}
{{- define "anyk.nodesRoleName" -}}
{{- printf "%s-operator-nodes" (include "anyk.fullname" .) }}
{{- end }}

{{- define "anyk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator pod (immutable in a Deployment: keep them minimal). The name is
fixed, whatever nameOverride says: the NetworkPolicy the operator creates for each job admits
pods labelled app.kubernetes.io/name: anyk-operator (OPERATOR_APP in operator/src/build.rs) in
the operator's namespace to the job's parameter server.
*/}}
{{- define "anyk.selectorLabels" -}}
app.kubernetes.io/name: anyk-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "anyk.labels" -}}
helm.sh/chart: {{ include "anyk.chart" . }}
{{ include "anyk.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: anyk
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* image REPOSITORY TAG: "repository:tag", the tag defaulting to the chart's appVersion. */}}
{{- define "anyk.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- printf "%s:%v" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/*
The namespaced rules of the operator, shared by the cluster-wide ClusterRole and the per-namespace
Roles. Every rule says why the operator needs it. No secrets, no configmaps, no CRD writes.
*/}}
{{- define "anyk.namespacedRules" -}}
# TrainingJobs are the controller's primary resource: list/watch drive the reconcile loop, get
# re-reads a job fresh before writing status; delete only removes a finished job once its
# spec.ttlSecondsAfterFinished has passed.
- apiGroups: ["anyk.dev"]
  resources: ["trainingjobs"]
  verbs: ["get", "list", "watch", "delete"]
# Status (phase, layout epoch, coverage margin, progress, last repair) is written by server-side
# apply on the status subresource (a patch); get reads the current status.
- apiGroups: ["anyk.dev"]
  resources: ["trainingjobs/status"]
  verbs: ["get", "patch"]
# The parameter-server and worker pods: list/watch to see a worker fail or vanish, get to read one;
# create makes an absent pod (created, never applied or patched: a pod of the same name that is
# not the job's is never taken over); delete replaces a lost worker's pod and removes the pods of
# a suspended or failed job.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The parameter server's Service ({job}-server), applied by server-side apply (create, patch) and
# read back with get; delete removes it when a job no longer needs it.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch", "delete"]
# Mutual TLS of each job's gRPC plane: the job's certificate authority ({job}-tls-ca) and the
# pods' certificates ({pod}-tls, or {job}-workers-{first}-{last}-tls shared by workers created
# together, each pod mounting only its own keys), all owned by the job. create makes them; get
# reads the authority back (after an operator restart) and checks a Secret is the job's before it
# is replaced; update puts fresh certificates in the Secret of replaced pods. No list or watch:
# the operator never reads Secrets it did not name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update"]
# The job's helper Jobs ({job}-stage splits spec.dataset.source into blocks before the workers
# start; {job}-export writes the trained model's files once the job succeeded), owned by the job:
# create makes one, get reads how it went (a foreign one is never taken over). Their pods are
# read with the pod rule above (list, by the Job controller's label) for what they said as they
# ended. Pods of a Job are made by the Job controller, not by the operator.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create"]
# While {job}-stage runs, the last line its split wrote ("writing block 17 of 24") is the progress
# its DataStaged condition shows: get of that one line (tailLines=1) of the stage pod's log.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# kube-runtime's event Recorder publishes events.k8s.io/v1 Events on TrainingJobs (worker lost,
# layout repaired, ...): create a new Event, patch to bump the count of a repeated one.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.networkPolicy.enabled }}
# networkPolicy.enabled: two NetworkPolicies per job (only the job's workers and the operator may
# reach its parameter server; the workers may reach only the server and DNS), applied by
# server-side apply (create, patch), read with get (a foreign one is never taken over), and
# deleted when no longer wanted.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- end }}
