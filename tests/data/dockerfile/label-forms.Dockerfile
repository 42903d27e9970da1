FROM busybox
LABEL a=b
LABEL "com.example.vendor"="ACME Incorporated"
LABEL com.example.label-with-value="foo" version="1.0" description="multi \
word"
LABEL legacy form value
LABEL x="" y='' z=
LABEL "key with space"=v
