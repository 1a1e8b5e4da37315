{{/*
Names are derived from the release so two releases (e.g. for two driver
names) can coexist in one cluster; cluster-scoped objects need that most.
*/}}
{{- define "proxmox-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "proxmox-csi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels stay fixed across upgrades: a selector is immutable. */}}
{{- define "proxmox-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "proxmox-csi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "proxmox-csi.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "proxmox-csi.fullname" .)) .Values.serviceAccount.controller.name -}}
{{- end -}}

{{- define "proxmox-csi.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "proxmox-csi.fullname" .)) .Values.serviceAccount.node.name -}}
{{- end -}}

{{- define "proxmox-csi.configSecret" -}}
{{- default (printf "%s-config" (include "proxmox-csi.fullname" .)) .Values.config.existingSecret -}}
{{- end -}}

{{/* Host directory holding this driver's socket, as kubelet sees it. */}}
{{- define "proxmox-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.node.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/*
Sidecar timeout: longer than the driver's own Proxmox task timeout, so a slow
task ends with the driver's error rather than a sidecar retry racing it.
*/}}
{{- define "proxmox-csi.sidecarTimeout" -}}
{{- printf "%ds" (add (int .Values.controller.taskTimeout) 30) -}}
{{- end -}}

{{/*
Pod spec of one node-plugin DaemonSet. Called with a dict:
  root          the chart's top-level context
  suffix        appended to the DaemonSet name ("" for the plain one)
  region, zone  topology to report; empty means "do not report"
  nodeSelector  merged over .Values.node.nodeSelector
*/}}
{{/*
Pod annotations that let an annotation-based Prometheus scrape the driver.
*/}}
{{- define "proxmox-csi.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}

{{/*
KUBERNETES_SERVICE_HOST/PORT for clusters where Pods reach the API server
elsewhere than at the kubernetes Service's ClusterIP (no kube-proxy, or
hostNetwork Pods without a service network). Explicit env wins over the
variables kubelet injects. Renders nothing when apiServer.host is empty.
*/}}
{{- define "proxmox-csi.apiServerEnv" -}}
{{- with .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $.Values.apiServer.port | default "443" | quote }}
{{- end }}
{{- end }}

{{- define "proxmox-csi.nodeDaemonSet" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := printf "%s-node%s" (include "proxmox-csi.fullname" $root) .suffix -}}
{{- if not (has $v.node.registration (list "sidecar" "builtin")) }}
{{- fail (printf "node.registration must be sidecar or builtin, not %q" $v.node.registration) }}
{{- end }}
{{- $builtinReg := eq $v.node.registration "builtin" -}}
{{- $builtinHealth := eq $v.healthProbe "builtin" -}}
{{- $metricsPort := $v.node.metricsPort | default $v.metrics.port -}}
{{- $selector := merge (dict) (.nodeSelector | default dict) ($v.node.nodeSelector | default dict) -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ $name | trunc 63 | trimSuffix "-" }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "proxmox-csi.labels" $root | nindent 4 }}
    app.kubernetes.io/component: node
spec:
  selector:
    matchLabels:
      {{- include "proxmox-csi.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: node
      proxmox-csi.dev/node-group: {{ .group | quote }}
  updateStrategy:
    type: RollingUpdate
  template:
    metadata:
      labels:
        {{- include "proxmox-csi.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: node
        proxmox-csi.dev/node-group: {{ .group | quote }}
      {{- if or $v.metrics.enabled $v.node.podAnnotations }}
      annotations:
        {{- if $v.metrics.enabled }}
        {{- include "proxmox-csi.metricsAnnotations" $root | nindent 8 }}
        {{- end }}
        {{- with $v.node.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "proxmox-csi.nodeServiceAccount" $root }}
      {{- if $v.node.hostNetwork }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      # Neither the plugin nor the registrar calls the API server.
      automountServiceAccountToken: {{ $v.node.topologyFromNodeLabels }}
      {{- with $v.node.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $selector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.node.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.node.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: proxmox-csi
          image: {{ include "proxmox-csi.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            - node
            - --endpoint=unix:///csi/csi.sock
            - --driver-name={{ $v.driverName }}
            - --device-dir={{ $v.node.deviceDir }}
            - --device-wait={{ $v.node.deviceWait }}
            # Staging and target paths must lie below it (mounted at the
            # same path as on the host, see the kubelet-dir volume).
            - --kubelet-dir={{ $v.node.kubeletDir }}
            # Same limit the controller enforces, so the scheduler's count
            # of attachable volumes matches what the controller will allow.
            - --node-max-volumes={{ $v.controller.maxVolumesPerNode }}
            {{- if $v.node.topologyFromNodeLabels }}
            - --topology-from-node-labels
            {{- end }}
            {{- if or $v.metrics.enabled $builtinHealth }}
            - --metrics-address=0.0.0.0:{{ $metricsPort }}
            {{- end }}
            {{- if $builtinReg }}
            # Serve kubelet's plugin-registration socket in
            # <kubeletDir>/plugins_registry; kubelet is told to dial the CSI
            # socket at its host path.
            - --kubelet-registration
            - --kubelet-registration-path={{ include "proxmox-csi.pluginDir" $root }}/csi.sock
            {{- end }}
            {{- range $v.node.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            {{- include "proxmox-csi.apiServerEnv" $root | nindent 12 }}
            # The node id is the worker's Proxmox VM name, assumed equal to
            # the Kubernetes node name.
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            {{- /* Unset rather than empty: an empty value would be reported
                   as a topology segment with an empty name. */}}
            {{- with .region }}
            - name: NODE_REGION
              value: {{ . | quote }}
            {{- end }}
            {{- with .zone }}
            - name: NODE_ZONE
              value: {{ . | quote }}
            {{- end }}
            - name: RUST_LOG
              value: {{ $v.logLevel | quote }}
          ports:
            {{- if not $builtinHealth }}
            - name: healthz
              containerPort: 9808
            {{- end }}
            {{- if or $v.metrics.enabled $builtinHealth }}
            - name: metrics
              containerPort: {{ $metricsPort }}
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ ternary "metrics" "healthz" $builtinHealth }}
            initialDelaySeconds: 10
            periodSeconds: 30
            timeoutSeconds: 5
            failureThreshold: 5
          # Formatting, mounting and opening LUKS devices need root and the
          # host's devices.
          securityContext:
            privileged: true
            runAsUser: 0
          {{- with $v.node.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: plugin-dir
              mountPath: /csi
            # Bidirectional: mounts made in here must appear in kubelet's
            # and the pods' mount namespaces.
            - name: kubelet-dir
              mountPath: {{ $v.node.kubeletDir }}
              mountPropagation: Bidirectional
            # Hot-plugged disks show up in the host's /dev via udev.
            - name: dev
              mountPath: /dev
            - name: sys
              mountPath: /sys
            - name: udev
              mountPath: /run/udev
              readOnly: true
            {{- with $v.node.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- if not $builtinReg }}
        - name: node-driver-registrar
          image: {{ $v.sidecars.nodeDriverRegistrar.image }}
          imagePullPolicy: {{ $v.sidecars.pullPolicy }}
          args:
            - --csi-address=/csi/csi.sock
            - --kubelet-registration-path={{ include "proxmox-csi.pluginDir" $root }}/csi.sock
            - --http-endpoint=:9809
            - --v={{ $v.sidecars.logLevel }}
          ports:
            - name: registrar
              containerPort: 9809
          # Restarts the registrar when kubelet has lost the registration.
          livenessProbe:
            httpGet:
              path: /healthz
              port: registrar
            initialDelaySeconds: 5
            periodSeconds: 30
            timeoutSeconds: 5
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          {{- with $v.sidecars.nodeDriverRegistrar.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: plugin-dir
              mountPath: /csi
            - name: registration-dir
              mountPath: /registration
        {{- end }}
        {{- if not $builtinHealth }}
        - name: liveness-probe
          image: {{ $v.sidecars.livenessProbe.image }}
          imagePullPolicy: {{ $v.sidecars.pullPolicy }}
          args:
            - --csi-address=/csi/csi.sock
            - --health-port=9808
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          {{- with $v.sidecars.livenessProbe.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: plugin-dir
              mountPath: /csi
        {{- end }}
      volumes:
        - name: plugin-dir
          hostPath:
            path: {{ include "proxmox-csi.pluginDir" $root }}
            type: DirectoryOrCreate
        {{- if not $builtinReg }}
        - name: registration-dir
          hostPath:
            path: {{ trimSuffix "/" $v.node.kubeletDir }}/plugins_registry
            type: Directory
        {{- end }}
        - name: kubelet-dir
          hostPath:
            path: {{ $v.node.kubeletDir }}
            type: Directory
        - name: dev
          hostPath:
            path: /dev
            type: Directory
        - name: sys
          hostPath:
            path: /sys
            type: Directory
        - name: udev
          hostPath:
            path: /run/udev
            type: Directory
        {{- with $v.node.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}
