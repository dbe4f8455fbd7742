{{/* Names: the same rules as Go kured's chart, so a release keeps its object names. */}}
{{- define "kured.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kured.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kured.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "kured.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kured.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The DaemonSet's selector is immutable: these two labels are Go kured's chart's. */}}
{{- define "kured.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kured.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kured.labels" -}}
{{ include "kured.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Metadata of a namespaced object: name, namespace, labels. */}}
{{- define "kured.metadata" -}}
name: {{ include "kured.fullname" . }}
namespace: {{ include "kured.namespace" . }}
labels:
  {{- include "kured.labels" . | nindent 2 }}
{{- end -}}

{{/* A map of labels or annotations, every value a string (8080 → "8080"). */}}
{{- define "kured.stringMap" -}}
{{- $strings := dict -}}
{{- range $key, $value := . }}{{ $_ := set $strings $key (toString $value) }}{{ end -}}
{{- toYaml $strings -}}
{{- end -}}

{{- define "kured.sentinelPath" -}}
{{- .Values.configuration.rebootSentinel | default "/var/run/reboot-required" -}}
{{- end -}}

{{/*
Flags from configuration, in Go kured's chart's order (ours last):
[key, flag] renders --flag=value when the value is set (Go template truth: not "", 0, false),
and one --flag=item per item of a list; style "bare" renders a bare --flag when true, style
"tpl" passes the value through tpl, style "set" renders 0 too (only "" passes nothing).
*/}}
{{- define "kured.flagTable" -}}
- [metricsHost, metrics-host]
- [metricsPort, metrics-port]
- [lockTtl, lock-ttl]
- [lockReleaseDelay, lock-release-delay]
- [alertFilterRegexp, alert-filter-regexp]
- [alertFiringOnly, alert-firing-only]
- [alertFilterMatchOnly, alert-filter-match-only]
- [blockingPodSelector, blocking-pod-selector]
- [endTime, end-time]
- [lockAnnotation, lock-annotation]
- [period, period]
- [forceReboot, force-reboot, bare]
- [drainGracePeriod, drain-grace-period]
- [drainPodSelector, drain-pod-selector]
- [drainDelay, drain-delay]
- [drainTimeout, drain-timeout]
- [skipWaitForDeleteTimeout, skip-wait-for-delete-timeout]
- [prometheusUrl, prometheus-url]
- [rebootDays, reboot-days]
- [preRebootNodeLabels, pre-reboot-node-labels]
- [postRebootNodeLabels, post-reboot-node-labels]
- [rebootSentinel, reboot-sentinel]
- [rebootSentinelCommand, reboot-sentinel-command]
- [rebootCommand, reboot-command]
- [rebootDelay, reboot-delay]
- [rebootMethod, reboot-method]
- [rebootSignal, reboot-signal]
- [slackChannel, slack-channel, tpl]
- [slackHookUrl, slack-hook-url, tpl]
- [slackUsername, slack-username, tpl]
- [notifyUrl, notify-url]
- [messageTemplateDrain, message-template-drain]
- [messageTemplateReboot, message-template-reboot]
- [messageTemplateUncordon, message-template-uncordon]
- [startTime, start-time]
- [timeZone, time-zone]
- [annotateNodes, annotate-nodes]
- [preferNoScheduleTaint, prefer-no-schedule-taint]
- [logFormat, log-format]
- [concurrency, concurrency]
- [lockBackend, lock-backend]
- [staleLockTimeout, stale-lock-timeout]
- [maxUnavailableNodes, max-unavailable, set]
- [lockGroupLabel, lock-group-label]
- [postRebootPodSelector, post-reboot-pod-selector]
- [postRebootGateQuery, post-reboot-gate-query]
- [postRebootGateTimeout, post-reboot-gate-timeout]
- [maxConsecutiveReboots, max-consecutive-reboots, set]
- [dryRun, dry-run, bare]
- [pollOnly, poll-only, bare]
- [rebootWindow, reboot-window]
- [blackoutDates, blackout-dates]
- [maxNodeAge, max-node-age]
- [blockingQuery, blocking-query]
- [alertmanagerUrl, alertmanager-url]
- [notifyBlockedAfter, notify-blocked-after]
- [messageTemplateBlocked, message-template-blocked]
- [messageTemplateDrainFailed, message-template-drain-failed]
- [messageTemplateRebootLoop, message-template-reboot-loop]
- [messageTemplateGateTimeout, message-template-gate-timeout]
{{- end -}}

{{/*
The container's args as a YAML list. With useRebootSentinelHostPath the sentinel is read
through the /sentinel mount and rebootSentinelCommand is dropped, as in Go kured's chart.
*/}}
{{- define "kured.args" -}}
{{- $root := . -}}
{{- $config := deepCopy .Values.configuration -}}
{{- if $config.useRebootSentinelHostPath -}}
{{- $_ := set $config "rebootSentinel" (printf "/sentinel/%s" (base (include "kured.sentinelPath" .))) -}}
{{- $_ := set $config "rebootSentinelCommand" "" -}}
{{- end -}}
{{- $args := list (printf "--ds-name=%s" (include "kured.fullname" .)) (printf "--ds-namespace=%s" (include "kured.namespace" .)) -}}
{{- range $entry := include "kured.flagTable" . | fromYamlArray -}}
{{- $flag := index $entry 1 -}}
{{- $style := "" -}}
{{- if eq (len $entry) 3 }}{{ $style = index $entry 2 }}{{ end -}}
{{- $value := get $config (index $entry 0) -}}
{{- if kindIs "slice" $value -}}
{{- range $value -}}
{{- $args = append $args (printf "--%s=%v" $flag .) -}}
{{- end -}}
{{- else if and $value (eq $style "bare") -}}
{{- $args = append $args (printf "--%s" $flag) -}}
{{- else if and (eq $style "set") (ne (toString $value) "") -}}
{{- $args = append $args (printf "--%s=%v" $flag $value) -}}
{{- else if and $value (eq $style "tpl") -}}
{{- $args = append $args (printf "--%s=%s" $flag (tpl $value $root)) -}}
{{- else if $value -}}
{{- $args = append $args (printf "--%s=%v" $flag $value) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := .Values.extraArgs -}}
{{- $args = append $args (ternary (printf "--%s=%v" $key $value) (printf "--%s" $key) (not (empty $value))) -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/* The container securityContext: the reboot method's defaults, each key the user sets wins. */}}
{{- define "kured.containerSecurityContext" -}}
{{- $defaults := dict "runAsUser" 0 "privileged" true "readOnlyRootFilesystem" true -}}
{{- if eq .Values.configuration.rebootMethod "signal" -}}
{{- $defaults = dict "runAsUser" 0 "privileged" false "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "capabilities" (dict "drop" (list "ALL") "add" (list "KILL")) -}}
{{- end -}}
{{- range $key, $value := .Values.containerSecurityContext -}}
{{- $_ := set $defaults $key $value -}}
{{- end -}}
{{- toYaml $defaults -}}
{{- end -}}
