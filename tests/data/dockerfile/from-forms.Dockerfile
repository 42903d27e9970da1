FROM busybox
FROM busybox:1.36
FROM busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000
FROM registry.example.com:5000/team/image:tag AS named
FROM --platform=linux/arm64 alpine AS arm
FROM --platform=$BUILDPLATFORM golang:1.22 as gobuild
FROM scratch
FROM  busybox   AS   spaced
FROM	busybox	AS	tabbed
